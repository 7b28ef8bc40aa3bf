"""One readable training loop for the SRGAN recipe: sample crops -> G step (content + adversarial) ->
D step -> log / validate / checkpoint. Runs single-process or under ``torchrun`` (DDP, rank-0 I/O).

Losses (``cfg.loss``): ``mse``, ``vgg`` (VGG54 features), ``gan`` (content MSE or VGG + adversarial) and
``perpix`` (w1 * MSE + w2 * VGG + adversarial with the step schedule). Checkpoints hold both networks,
both optimisers, the step and the full config; batches are drawn from (seed, rank, step) alone, so a
resumed run continues exactly where it stopped.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vsr import interrupt
from vsr import weights as weights_io
from vsr.atomic import atomic_output
from vsr.config import TrainConfig, to_dict, train_config_from_dict
from vsr.data import CropSampler, degrade_bicubic, frame_order, list_images, load_images, mod_crop
from vsr.degrade import Condition, parse_condition, parse_degradation
from vsr.degrade import config_dict as degradation_dict
from vsr.device import autocast, resolve_device, resolve_precision
from vsr.errors import DataError, VsrError, WeightsError
from vsr.images import write_image
from vsr.inference import Upscaler
from vsr.losses import (LOSSES, content_weights, discriminator_loss, generator_adversarial, log_mse, parse_schedule,
                        uses_gan, vgg_loss)
from vsr.metrics import psnr
from vsr.models import Discriminator
from vsr.models.flowfuse import from_srresnet as flow_from_srresnet
from vsr.models.recurrent import FreezableCore, Unrolled, from_srresnet
from vsr.report import comparison, line_plot
from vsr.sequences import Motion, SequenceSampler, clip_sources, load_clip

ARCHS = weights_io.TRAINABLE_ARCHS
TEMPORAL_ARCHS = tuple(a for a in ARCHS if weights_io.describe(a, {}).temporal)
LOG_FIELDS = ["step", "loss", "pixel_mse", "vgg", "adv", "d_loss", "w_mse", "w_vgg", "lr", "train_psnr", "val_psnr",
              "val_psnr_deg", "seconds"]


@dataclass
class Dist:
    """Where this process stands in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the torchrun job if there is one (NCCL on GPUs, gloo on CPUs) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    d = Dist(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


def step_seed(seed: int, rank: int, step: int) -> int:
    """The data seed of one step on one rank."""
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63)


def validate(model: nn.Module, images: list[torch.Tensor], *, device: torch.device, precision: str,
             scale: int = 4, condition: Condition | None = None) -> float:
    """Mean Y-PSNR (4-px border crop) of the model on HR images whose LR is made by bicubic 1/scale
    (then put through a bench ``condition``'s lossy steps, e.g. a codec, if one is given)."""
    return validate_clips(model, [[hr] for hr in images], device=device, precision=precision, scale=scale,
                          condition=condition)


def validate_clips(model: nn.Module, clips: list[list[torch.Tensor]], *, device: torch.device, precision: str,
                   scale: int = 4, condition: Condition | None = None) -> float:
    """Mean over clips of the per-clip mean Y-PSNR (4-px border crop) of HR frame sequences whose LR is made by
    bicubic 1/scale (a ``condition``'s codec runs over each whole clip); a temporal model sees the frames in
    order through ``Upscaler.upscale_stream``, an image model one frame at a time. 1-frame clips are images."""
    up = Upscaler(model, device=device, precision=precision)
    means = []
    for clip in clips:
        hrs = [mod_crop(hr, scale) for hr in clip]
        lrs = [degrade_bicubic(hr, scale).permute(1, 2, 0).numpy() for hr in hrs]
        if condition is not None:
            lrs = condition.apply(lrs)
        state, scores = None, []
        for lr, hr in zip(lrs, hrs):
            sr, state = _upscale_step(up, lr, state)
            scores.append(psnr(torch.from_numpy(sr).permute(2, 0, 1), hr, crop_border=scale))
        means.append(np.mean(scores))
    return float(np.mean(means))


def _upscale_step(up: Upscaler, lr: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
    """One (H, W, 3) frame through the upscaler: the stream call (with its state) for a temporal model."""
    if up.descriptor.temporal:
        out, state = up.upscale_stream(lr[None], state)
        return out[0], state
    return up.upscale(lr[None])[0], None


def comparison_grid(model: nn.Module, images: list[torch.Tensor], *, device: torch.device, precision: str,
                    size: int = 96) -> np.ndarray:
    """Rows of LR | bicubic | model | HR on fixed centre crops of the first validation images (RGB)."""
    up = Upscaler(model, device=device, precision=precision)
    rows = []
    for hr in images[:4]:
        h, w = hr.shape[-2:]
        s = min(size, h, w) // 4 * 4
        y, x = (h - s) // 2, (w - s) // 2
        crop = hr[:, y : y + s, x : x + s]
        lr = degrade_bicubic(crop).permute(1, 2, 0).numpy()
        sr = _upscale_step(up, lr, None)[0]
        rows.append(comparison(lr, crop.permute(1, 2, 0).numpy(), [("model", sr)]))
    width = max(r.shape[1] for r in rows)
    return np.vstack([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])


def learning_rate(cfg: TrainConfig, step: int, horizon: int) -> float:
    """Cosine decay from ``cfg.lr`` to ``cfg.lr_min`` over ``horizon`` steps, then ``lr_min``.

    The horizon is the step count of the run's first invocation and is kept in its checkpoint, so a run
    extended with ``--resume --steps N`` goes on at ``lr_min`` instead of re-stretching the curve (which
    made the learning rate jump back up at the resume step).
    """
    t = min(step / max(horizon, 1), 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t))


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional extra: pip install -e ".[tensorboard]"
        return None
    return SummaryWriter(str(run_dir / "tb"))


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise VsrError(f"{run_dir}: no checkpoint.pt to resume from")
    return weights_io.load_checkpoint(path)


MAX_DEGRADE_WORKERS = 8


def degrade_workers(asked: int) -> int:
    """Threads that draw degraded batches ahead: ``asked``, or for 0 one per core this process may use beside
    the training loop's own (the cores divided among the ranks on this machine, less one), 1 to 8."""
    if asked:
        return asked
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_DEGRADE_WORKERS, cores // max(1, local) - 1))


def resume_config(run_dir: str | Path, *, steps: int | None = None, max_seconds: float = 0,
                  degrade_workers: int | None = None) -> TrainConfig:
    """The config a run was started with (optionally with a new total number of steps); a time limit belongs to
    one invocation, so it is not inherited, and the degradation threads (a machine setting) may be changed."""
    stored = load_checkpoint(run_dir)["config"]
    unknown = sorted(set(stored) - {f.name for f in fields(TrainConfig)}) if isinstance(stored, dict) else ["?"]
    if unknown:
        raise VsrError(f"{Path(run_dir) / 'checkpoint.pt'}: its config has options this vsr does not know "
                       f"({', '.join(map(str, unknown))}); resume it with the vsr version that started it")
    try:
        cfg = train_config_from_dict(stored)
    except (TypeError, ValueError) as exc:
        raise VsrError(f"{Path(run_dir) / 'checkpoint.pt'}: its config cannot be read ({exc})") from None
    cfg.out = str(run_dir)
    cfg.max_seconds = max_seconds
    if steps is not None:
        cfg.steps = steps
    if degrade_workers is not None:
        cfg.degrade_workers = degrade_workers
    return cfg


@dataclass
class Run:
    """Everything one training run holds: its data, both networks (and their DDP/compile wrappers used for
    the forward passes), their optimisers and loss scalers, and the step reached."""

    cfg: TrainConfig
    ddp: Dist
    device: torch.device
    precision: str
    sampler: CropSampler
    val_images: list[torch.Tensor]  # for a temporal arch: the first frame of each validation clip (the grid)
    val_clips: list[list[torch.Tensor]]  # temporal arch only: validation sequences (1-frame ones for images)
    vgg: nn.Module | None
    schedule: tuple
    val_condition: Condition | None
    gen: nn.Module
    g_train: nn.Module
    opt_g: torch.optim.Optimizer
    scaler_g: torch.amp.GradScaler
    disc: nn.Module | None = None
    d_train: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    scaler_d: torch.amp.GradScaler | None = None
    step: int = 0
    lr_horizon: int = 0  # steps of the cosine schedule: those of the run's first invocation

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out)


def setup(cfg: TrainConfig, *, resume: bool) -> Run:
    """Check the options, load the data (bad input fails before any compute), build both networks and their
    optimisers, and restore them from the checkpoint when resuming."""
    if cfg.loss not in LOSSES:
        raise VsrError(f"--loss {cfg.loss!r}: choose one of {', '.join(LOSSES)}")
    if cfg.content not in ("mse", "vgg"):
        raise VsrError(f"--content {cfg.content!r}: choose mse or vgg")
    if cfg.arch not in ARCHS:
        raise VsrError(f"--arch {cfg.arch!r}: choose one of {', '.join(ARCHS)}")
    temporal = cfg.arch in TEMPORAL_ARCHS
    if temporal and cfg.seq_len < 2:
        raise VsrError(f"--seq-len {cfg.seq_len}: {cfg.arch} trains on sequences of at least 2 frames")
    if not temporal and cfg.seq_len != 1:
        raise VsrError(f"--seq-len {cfg.seq_len}: {cfg.arch} trains on single crops; --seq-len is for "
                       f"{', '.join(TEMPORAL_ARCHS)}")
    if not temporal and (cfg.clips or cfg.core_lr != 1.0):
        raise VsrError(f"--clips and --core-lr are for a temporal --arch ({', '.join(TEMPORAL_ARCHS)}), not {cfg.arch}")
    if not cfg.data and not cfg.clips:
        raise VsrError("give at least one --data folder of HR training images"
                       + (" or --clips of real video" if temporal else ""))
    if not 0 <= cfg.core_lr <= 1:
        raise VsrError(f"--core-lr {cfg.core_lr:g}: a fraction of --lr between 0 (frozen) and 1")
    for name in ("batch_size", "crop", "log_every", "ckpt_every"):
        if getattr(cfg, name) < 1:
            raise VsrError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    schedule = parse_schedule(cfg.perpix_schedule)
    degradation = parse_degradation(cfg.degradation)
    val_condition = parse_condition(cfg.val_degradation) if cfg.val_degradation else None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ddp, device = _init_distributed(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop and batch: pick the fastest conv kernels once
    precision = resolve_precision(device, cfg.precision)
    needs_vgg = cfg.loss in ("vgg", "perpix") or (cfg.loss == "gan" and cfg.content == "vgg")

    paths = list_images(cfg.data) if cfg.data else []
    clips = clip_sources(cfg.clips) if cfg.clips else []
    shard, clip_shard = paths[ddp.rank :: ddp.world], clips[ddp.rank :: ddp.world]
    if not shard and not clip_shard:
        raise DataError(f"{len(paths) + len(clips)} training images and clips cannot feed {ddp.world} ranks")
    workers = degrade_workers(cfg.degrade_workers)
    if temporal:
        motion = Motion(shift=cfg.motion)
        sampler = SequenceSampler(load_images(shard, min_size=motion.min_size(cfg.crop, cfg.seq_len)), crop=cfg.crop,
                                  frames=cfg.seq_len, motion=motion, device=device, degradation=degradation,
                                  clips=[load_clip(c, frames=cfg.seq_len) for c in clip_shard],
                                  clip_share=cfg.clip_share, workers=workers)
    else:
        sampler = CropSampler(load_images(shard, min_size=degradation.region(cfg.crop)), crop=cfg.crop,
                              device=device, degradation=degradation, workers=workers)
    val_clips = load_val_clips(cfg.val) if temporal and cfg.val and ddp.main else []
    if temporal:
        val_images = [clip[0] for clip in val_clips]
    else:
        val_images = load_images(list_images([cfg.val])) if cfg.val and ddp.main else []
    vgg = weights_io.load_vgg54(cfg.vgg_weights).to(device) if needs_vgg else None

    torch.manual_seed(cfg.seed)
    gen = build_generator(cfg.arch, cfg.init)
    gen = gen.to(device).to(memory_format=torch.channels_last).train()
    fused = device.type == "cuda"  # one kernel for the whole Adam update on GPUs
    run = Run(cfg=cfg, ddp=ddp, device=device, precision=precision, sampler=sampler, val_images=val_images,
              val_clips=val_clips, vgg=vgg, schedule=schedule, val_condition=val_condition, gen=gen,
              g_train=Unrolled(gen) if temporal else gen,
              opt_g=torch.optim.Adam(_param_groups(gen, cfg.core_lr), lr=cfg.lr, betas=tuple(cfg.betas), fused=fused),
              scaler_g=torch.amp.GradScaler(device.type, enabled=precision == "fp16"), lr_horizon=cfg.steps)
    if uses_gan(cfg.loss):
        run.disc = run.d_train = Discriminator(crop=cfg.crop).to(device).to(memory_format=torch.channels_last).train()
        run.opt_d = torch.optim.Adam(run.disc.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)
        run.scaler_d = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if resume:
        _restore(run, load_checkpoint(run.run_dir), run.run_dir / "checkpoint.pt")
    if ddp.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        run.g_train = nn.parallel.DistributedDataParallel(run.g_train, device_ids=ids)
        if run.disc is not None:
            run.d_train = nn.parallel.DistributedDataParallel(run.disc, device_ids=ids)
    if cfg.compile:
        run.g_train = torch.compile(run.g_train)
    return run


def _param_groups(gen: nn.Module, core_lr: float) -> list[dict[str, Any]]:
    """The generator's Adam groups: one, or for a temporal one with ``core_lr`` < 1 the SRResNet core apart at
    that fraction of the learning rate (``lr_scale``); at 0 the core is frozen (``freeze_core``: not optimised,
    its batch norms' statistics kept)."""
    if core_lr == 1.0 or not isinstance(gen, FreezableCore):
        return [{"params": list(gen.parameters()), "lr_scale": 1.0}]
    core = list(gen.core.parameters())
    ids = {id(p) for p in core}
    groups = [{"params": [p for p in gen.parameters() if id(p) not in ids], "lr_scale": 1.0}]
    if core_lr == 0:
        gen.freeze_core()
    else:
        groups.append({"params": core, "lr_scale": core_lr})
    return groups


def build_generator(arch: str, init: str | None = None) -> nn.Module:
    """The generator of ``arch`` (default sizes), randomly initialised or from the weights ``init``. A temporal
    one starts from an SRResNet file through its ``from_srresnet`` (temporal conv or fusion at zero: it computes
    the SRResNet, or the fixed flow blend, exactly), or from a file of its own architecture as it is."""
    if not init:
        return weights_io.describe(arch, {}).build()
    loaded = weights_io.load(init)
    if arch == "srresnet" or loaded.descriptor.arch != "srresnet":  # the same architecture: its tensors as they are
        gen = weights_io.describe(arch, {}).build()
        _load_into(gen, loaded.model.state_dict(), loaded.path, arch)
        return gen
    params = weights_io.DEFAULT_PARAMS[arch]
    if arch == "fusion-srresnet":
        gen = flow_from_srresnet(loaded.model, **{k: params[k] for k in ("alpha", "sigma", "preset", "fusion",
                                                                         "fusion_layers")})
    else:
        gen = from_srresnet(loaded.model, **{k: params[k] for k in ("hidden", "temporal_kernel", "window", "feedback")})
    if gen.arch_kwargs != params:
        raise WeightsError(f"{loaded.path}: an SRResNet of {loaded.descriptor.params}; {arch} trains with {params}")
    return gen


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: does not match {what} ({str(exc).strip().splitlines()[0]})") from None


def load_val_clips(folder: str | Path) -> list[list[torch.Tensor]]:
    """Validation sequences: each sub-folder of images is one clip (frames in natural name order, as
    ``--clips``), as Vid4's GT/; a folder of images alone gives one 1-frame clip per image."""
    folder = Path(folder)
    subs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if subs:
        return [load_images(sorted(list_images([sub]), key=frame_order)) for sub in subs]
    return [[img] for img in load_images(list_images([folder]))]


def _restore(run: Run, ck: dict[str, Any], path: Path) -> None:
    """Networks, optimisers, scalers, step and schedule horizon from a checkpoint; a mismatch is one line."""
    try:
        run.gen.load_state_dict(ck["model"])
        run.opt_g.load_state_dict(ck["optimizer"])
        if ck.get("scaler_g"):
            run.scaler_g.load_state_dict(ck["scaler_g"])
        if run.disc is not None:
            run.disc.load_state_dict(ck["discriminator"])
            run.opt_d.load_state_dict(ck["optimizer_d"])
            if ck.get("scaler_d"):
                run.scaler_d.load_state_dict(ck["scaler_d"])
        run.step = int(ck["step"])
        # checkpoints written before the horizon was kept: the steps of the config they were written with
        run.lr_horizon = int(ck.get("lr_horizon", ck["config"]["steps"]))
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise WeightsError(f"{path}: does not match this run ({type(exc).__name__}: {first})") from None


def train_step(run: Run, lr_img: torch.Tensor, hr_img: torch.Tensor, w_mse: float, w_vgg: float) -> dict[str, torch.Tensor]:
    """One optimiser step: the generator (D frozen), then the discriminator on the detached fakes.

    Returns the loss terms as device tensors (no host sync)."""
    cfg, device, precision, disc = run.cfg, run.device, run.precision, run.disc
    # generator step (D frozen, and called unwrapped so DDP does not wait for its gradients)
    if disc is not None:
        disc.requires_grad_(False)
    with autocast(device, precision):
        sr = run.g_train(lr_img)
    if sr.dim() == 5:  # (N, T, ...) sequences of a temporal generator: every frame counts, as a batch of N*T
        sr, hr_img = sr.flatten(0, 1), hr_img.flatten(0, 1)
    terms: dict[str, torch.Tensor] = {"pixel_mse": F.mse_loss(sr.float(), hr_img)}
    total = w_mse * (log_mse(sr, hr_img) if cfg.loss == "psnr" else terms["pixel_mse"])
    if w_vgg:
        with autocast(device, precision):
            terms["vgg"] = vgg_loss(run.vgg, sr, hr_img)
        total = total + w_vgg * terms["vgg"]
    if disc is not None:
        with autocast(device, precision):
            terms["adv"] = generator_adversarial(disc(sr))
        total = total + cfg.adv_weight * terms["adv"]
    run.opt_g.zero_grad(set_to_none=True)
    run.scaler_g.scale(total).backward()
    run.scaler_g.step(run.opt_g)
    run.scaler_g.update()

    # discriminator step on the detached fakes
    if disc is not None:
        disc.requires_grad_(True)
        with autocast(device, precision):
            d_loss = discriminator_loss(run.d_train(hr_img), run.d_train(sr.detach()))
        run.opt_d.zero_grad(set_to_none=True)
        run.scaler_d.scale(d_loss).backward()
        run.scaler_d.step(run.opt_d)
        run.scaler_d.update()
        terms["d_loss"] = d_loss
    terms["loss"] = total
    return terms


class RankZeroLog:
    """The run's outputs on rank 0 (log.csv rows, TensorBoard scalars, the progress bar); on other ranks it
    holds nothing. Loss terms are averaged over the steps since the last row, kept on the device until then."""

    def __init__(self, run: Run, *, resume: bool, quiet: bool) -> None:
        self.main, self.run_dir = run.ddp.main, run.run_dir
        self.running: dict[str, list[torch.Tensor]] = {}
        self.file = self.writer = self.tb = None
        self.bar = tqdm(total=run.cfg.steps, initial=run.step, disable=quiet or not self.main,
                        desc=f"train {run.cfg.loss}", unit="step", dynamic_ncols=True)
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.run_dir / "log.csv"
            # a resumed run keeps the rows up to its checkpoint: the steps after it are run, and logged, again
            kept = _rows_up_to(log_path, run.step) if resume else []
            with atomic_output(log_path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(kept)
            self.file = open(log_path, "a", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=LOG_FIELDS, extrasaction="ignore")
            self.tb = _tensorboard(self.run_dir)

    def __enter__(self) -> RankZeroLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()

    def message(self, text: str) -> None:
        if self.main:
            self.bar.write(text)

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        """The loss terms of one finished step."""
        if not self.main:
            return
        for k, v in terms.items():
            self.running.setdefault(k, []).append(v.detach().float())
        self.bar.update(1)

    def row(self, step: int, *, lr: float, w_mse: float, w_vgg: float, seconds: float, val_psnr: float | None,
            val_deg: tuple[str, float] | None = None) -> None:
        """Write one log.csv row (and the TensorBoard scalars) of the means since the last row."""
        means = {k: float(torch.stack(v).mean()) for k, v in self.running.items()}
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in means.items() if k in ("loss", "adv", "d_loss")})
        row: dict[str, Any] = {k: f"{v:.6g}" for k, v in means.items()}
        row |= {"step": step, "w_mse": w_mse, "w_vgg": w_vgg, "lr": f"{lr:.6g}",
                "train_psnr": f"{10 * math.log10(4.0 / max(means['pixel_mse'], 1e-12)):.3f}",
                "seconds": f"{seconds:.1f}"}
        if val_psnr is not None:
            row["val_psnr"] = f"{val_psnr:.3f}"
            msg = f"step {step}: validation Y-PSNR {val_psnr:.3f} dB"
            if val_deg is not None:
                row["val_psnr_deg"] = f"{val_deg[1]:.3f}"
                msg += f", {val_deg[0]} {val_deg[1]:.3f} dB"
            self.bar.write(msg)
        self.writer.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for k in ("loss", "pixel_mse", "vgg", "adv", "d_loss", "train_psnr", "val_psnr", "val_psnr_deg"):
                if row.get(k) not in (None, ""):
                    self.tb.add_scalar(k, float(row[k]), step)
        self.running = {}


def _rows_up_to(log_path: Path, step: int) -> list[dict[str, str]]:
    """The rows of an existing log.csv up to and including ``step`` (none if there is no log)."""
    if not log_path.is_file():
        return []
    with open(log_path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= step]


def save_checkpoint(run: Run) -> None:
    """Both networks, both optimisers and scalers, the step and the full config (rank 0 only)."""
    if not run.ddp.main:
        return
    state = {"model": weights_io.unwrap(run.gen).state_dict(), "optimizer": run.opt_g.state_dict(),
             "scaler_g": run.scaler_g.state_dict(), "step": run.step, "config": to_dict(run.cfg),
             "precision": run.precision, "lr_horizon": run.lr_horizon,
             "degradation": degradation_dict(run.sampler.degradation)}
    if run.disc is not None:
        state |= {"discriminator": weights_io.unwrap(run.disc).state_dict(), "optimizer_d": run.opt_d.state_dict(),
                  "scaler_d": run.scaler_d.state_dict()}
    weights_io.save_checkpoint(state, run.run_dir / "checkpoint.pt")


def keep_snapshot(run: Run) -> None:
    """The generator alone at this step (``vsr train export RUN --step N`` turns it into weights)."""
    if not run.ddp.main:
        return
    weights_io.save_checkpoint({"model": weights_io.unwrap(run.gen).state_dict(), "step": run.step, "config": to_dict(run.cfg),
                                "precision": run.precision, "degradation": degradation_dict(run.sampler.degradation)},
                               _snapshot_path(run.run_dir, run.step))


def train(cfg: TrainConfig, *, resume: bool = False, quiet: bool = False) -> Path:
    """Train with ``cfg``; returns the run folder (checkpoint.pt, log.csv, curves.png, grid.png, final.json).

    setup -> per step: learning rate, batch, ``train_step`` -> rank-0 log row (and validation) -> checkpoint.
    """
    run = setup(cfg, resume=resume)
    ddp, device, precision = run.ddp, run.device, run.precision
    t0 = time.time()
    last_val = None
    out_of_time = False
    with RankZeroLog(run, resume=resume, quiet=quiet) as log:
        if cfg.steps > run.lr_horizon and cfg.lr_min != cfg.lr:
            log.message(f"note: the learning rate follows the cosine schedule of the first {run.lr_horizon} steps; "
                        f"steps past it run at --lr-min {cfg.lr_min:g}")
        try:
            while run.step < cfg.steps:
                interrupt.check()
                if cfg.max_seconds and run.step % cfg.log_every == 0 and _time_is_up(cfg.max_seconds, t0, ddp, device):
                    out_of_time = True
                    log.message(f"stopping at step {run.step}: --max-seconds {cfg.max_seconds:g} reached (resume to go on)")
                    break
                lr_now = learning_rate(cfg, run.step, run.lr_horizon)
                for opt in (run.opt_g, run.opt_d):
                    for group in (opt.param_groups if opt is not None else []):
                        group["lr"] = lr_now * group.get("lr_scale", 1.0)
                lr_img, hr_img = run.sampler.sample_ahead(  # this step's batch; the coming steps' drawn ahead
                    cfg.batch_size, [step_seed(cfg.seed, ddp.rank, s)
                                     for s in range(run.step, min(cfg.steps, run.step + 1 + run.sampler.workers))])
                if lr_img.dim() == 4:
                    lr_img = lr_img.contiguous(memory_format=torch.channels_last)
                w_mse, w_vgg = content_weights(cfg.loss, run.step + 1, content=cfg.content, schedule=run.schedule)
                log.add(train_step(run, lr_img, hr_img, w_mse, w_vgg))
                run.step += 1
                step = run.step

                val_now = bool(cfg.val_every) and step % cfg.val_every == 0
                if ddp.main and (step % cfg.log_every == 0 or val_now or step == cfg.steps):
                    val = val_deg = None
                    if (val_now or step == cfg.steps) and run.val_images:
                        val = last_val = _validate(run)
                        if run.val_condition is not None:
                            val_deg = (run.val_condition.label, _validate(run, run.val_condition))
                        run.gen.train()
                    log.row(step, lr=lr_now, w_mse=w_mse, w_vgg=w_vgg, seconds=time.time() - t0, val_psnr=val,
                            val_deg=val_deg)
                    if val is not None:  # drawn after the row is in log.csv, so the curves include it
                        _write_pictures(run.run_dir, weights_io.unwrap(run.gen), run.val_images, device, precision)
                        run.gen.train()
                if step % cfg.ckpt_every == 0:
                    save_checkpoint(run)
                if cfg.keep_every and step % cfg.keep_every == 0:
                    keep_snapshot(run)
        except KeyboardInterrupt:
            save_checkpoint(run)
            raise
    save_checkpoint(run)
    in_sync = _ranks_in_sync(run.gen, ddp)
    if ddp.main:
        with atomic_output(run.run_dir / "final.json") as tmp:
            tmp.write_text(json.dumps(
                {"step": run.step, "stopped_early": out_of_time, "val_psnr": last_val, "world_size": ddp.world,
                 "ranks_in_sync": in_sync, "device": str(device), "precision": precision,
                 "seconds": round(time.time() - t0, 1), "config": to_dict(cfg)}, indent=2))
    if ddp.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if not in_sync:
        raise VsrError("the ranks ended with different generator weights (DDP out of sync)")
    return run.run_dir


def _validate(run: Run, condition: Condition | None = None) -> float:
    """Validation Y-PSNR: on the clips (in order) for a temporal generator, else on the images."""
    gen = weights_io.unwrap(run.gen)
    if run.val_clips:
        return validate_clips(gen, run.val_clips, device=run.device, precision=run.precision, condition=condition)
    return validate(gen, run.val_images, device=run.device, precision=run.precision, condition=condition)


def _write_pictures(run_dir: Path, gen: nn.Module, val_images: list[torch.Tensor], device: torch.device,
                    precision: str) -> None:
    """PSNR curves (train and validation over steps) and the comparison grid, refreshed at each validation."""
    with open(run_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    series = {"train (RGB, crops)": [(int(r["step"]), float(r["train_psnr"])) for r in rows if r.get("train_psnr")],
              "validation (Y, 4-px crop)": [(int(r["step"]), float(r["val_psnr"])) for r in rows if r.get("val_psnr")]}
    line_plot(series, run_dir / "curves.png", title="PSNR (dB) over steps")
    grid = comparison_grid(gen, val_images, device=device, precision=precision)
    write_image(run_dir / "grid.png", grid)


def _time_is_up(limit: float, t0: float, ddp: Dist, device: torch.device) -> bool:
    """Wall time of the loop past ``limit``; under DDP the ranks agree (max over ranks), so all stop at one step."""
    up = time.time() - t0 >= limit
    if ddp.world > 1:
        flag = torch.tensor([float(up)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        up = bool(flag.item())
    return up


def _ranks_in_sync(gen: nn.Module, ddp: Dist) -> bool:
    """All ranks hold the same generator (a checksum per rank, gathered)."""
    if ddp.world == 1:
        return True
    mine = torch.cat([p.detach().float().flatten() for p in weights_io.unwrap(gen).parameters()])
    gathered = [torch.zeros_like(mine) for _ in range(ddp.world)]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _snapshot_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "snapshots" / f"step{step:07d}.pt"


def load_snapshot(run_dir: str | Path, step: int) -> dict[str, Any]:
    """A generator kept by ``keep_every`` at ``step``."""
    path = _snapshot_path(run_dir, step)
    if not path.is_file():
        kept = sorted(int(p.stem.removeprefix("step")) for p in path.parent.glob("step*.pt"))
        raise VsrError(f"{run_dir}: no snapshot of step {step} "
                       f"(kept: {', '.join(map(str, kept)) or 'none; train with --keep-every N'})")
    return weights_io.load_checkpoint(path)


def export(run_dir: str | Path, out: str | Path, *, name: str, half: bool = False, step: int | None = None,
           extra_meta: dict | None = None) -> Path:
    """Write the inference-only generator of a run's checkpoint (or of its snapshot at ``step``), with its
    config as metadata."""
    ck = load_checkpoint(run_dir) if step is None else load_snapshot(run_dir, step)
    arch = ck["config"].get("arch", "srresnet") if isinstance(ck["config"], dict) else "srresnet"
    if arch not in ARCHS:
        raise WeightsError(f"{run_dir}: its generator is a {arch!r}, which this vsr does not know")
    model = weights_io.describe(arch, {}).build()  # the default sizes, as training builds them
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise WeightsError(f"{run_dir}: its generator does not match {arch} ({str(exc).splitlines()[0]})") from None
    meta = {"name": name, "steps": int(ck["step"]), "train_config": ck["config"],
            "degradation": ck.get("degradation", {"name": "bi"}), **(extra_meta or {})}
    return weights_io.save(model, out, meta=meta, half=half)

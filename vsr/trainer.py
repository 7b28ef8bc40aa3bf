"""One readable training loop for the generator: sample crops -> forward -> loss -> step, with
validation, CSV logs and resumable checkpoints that carry the full config."""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vsr import weights as weights_io
from vsr.config import TrainConfig, to_dict
from vsr.data import CropSampler, degrade_bicubic, list_images, load_images, mod_crop
from vsr.device import autocast, resolve_device, resolve_precision
from vsr.errors import VsrError
from vsr.inference import Upscaler
from vsr.metrics import psnr
from vsr.models import SRResNet

LOSSES = ("mse",)


def validate(model: torch.nn.Module, images: list[torch.Tensor], *, device: torch.device, precision: str,
             scale: int = 4) -> float:
    """Mean Y-PSNR (4-px border crop) of the model on HR images whose LR is made by bicubic 1/scale."""
    up = Upscaler(model, device=device, precision=precision, scale=scale)
    scores = []
    for hr in images:
        hr = mod_crop(hr, scale)
        lr = degrade_bicubic(hr, scale)
        sr = up.upscale(lr.permute(1, 2, 0)[None].numpy())[0]
        scores.append(psnr(torch.from_numpy(sr).permute(2, 0, 1), hr, crop_border=scale))
    return float(np.mean(scores))


def _lr_at(cfg: TrainConfig, step: int) -> float:
    t = min(step / max(cfg.steps, 1), 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t))


def train(cfg: TrainConfig, *, resume: bool = False, quiet: bool = False) -> Path:
    """Train a generator with ``cfg``; returns the run folder (checkpoints, log.csv, exported weights)."""
    if cfg.loss not in LOSSES:
        raise VsrError(f"--loss {cfg.loss}: not implemented yet (available: {', '.join(LOSSES)})")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.out)
    ckpt_path = run_dir / "checkpoint.pt"
    device = resolve_device(cfg.device)
    precision = resolve_precision(device, cfg.precision)
    if precision == "fp16":
        raise VsrError("training in fp16 is not supported yet; use bf16 or fp32")
    torch.manual_seed(cfg.seed)
    model = SRResNet().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if resume:
        if not ckpt_path.is_file():
            raise VsrError(f"{ckpt_path}: no checkpoint to resume from")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["data_rng"])
        torch.set_rng_state(ck["torch_rng"])
        step = int(ck["step"])
    images = load_images(list_images(cfg.data), min_size=cfg.crop)
    val_images = load_images(list_images([cfg.val])) if cfg.val else []
    sampler = CropSampler(images, crop=cfg.crop, device=device, generator=gen)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "log.csv"
    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "loss", "lr", "train_psnr", "val_psnr", "seconds"])

    def save_checkpoint() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "data_rng": gen.get_state(), "torch_rng": torch.get_rng_state(), "config": to_dict(cfg)}, tmp)
        tmp.replace(ckpt_path)

    bar = tqdm(total=cfg.steps, initial=step, disable=quiet, desc=f"train {cfg.loss}", unit="step")
    t0, running = time.time(), []
    try:
        while step < cfg.steps:
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, step)
            lr_img, hr_img = sampler.sample(cfg.batch_size)
            with autocast(device, precision):
                sr = model(lr_img.contiguous(memory_format=torch.channels_last))
            loss = torch.nn.functional.mse_loss(sr.float(), hr_img)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{running[-1]:.4f}")
            val_now = cfg.val_every and step % cfg.val_every == 0
            if step % cfg.log_every == 0 or val_now:
                mse = float(np.mean(running))
                train_psnr = 10 * math.log10(4.0 / mse)  # [-1, 1] range: peak-to-peak 2
                val_psnr = ""
                if val_now and val_images:
                    val_psnr = f"{validate(model, val_images, device=device, precision=precision):.3f}"
                    model.train()
                    bar.write(f"step {step}: val Y-PSNR {val_psnr} dB")
                writer.writerow([step, f"{mse:.6f}", f"{_lr_at(cfg, step):.3g}", f"{train_psnr:.3f}", val_psnr,
                                 f"{time.time() - t0:.1f}"])
                log.flush()
                running = []
            if step % cfg.ckpt_every == 0:
                save_checkpoint()
    except KeyboardInterrupt:
        save_checkpoint()
        raise
    finally:
        bar.close()
        log.close()
    save_checkpoint()
    return run_dir


def export(run_dir: str | Path, out: str | Path, *, name: str, half: bool = False, extra_meta: dict | None = None) -> Path:
    """Write the inference-only weights of a run's checkpoint, with its config as metadata."""
    ck = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=True)
    model = SRResNet()
    model.load_state_dict(ck["model"])
    meta = {"name": name, "arch": "srresnet", "arch_kwargs": {"num_blocks": 16, "channels": 64, "scale": 4},
            "input_range": "[0, 1] RGB", "output_range": "[-1, 1] RGB", "steps": int(ck["step"]),
            "train_config": ck["config"], **(extra_meta or {})}
    return weights_io.save(model, out, meta=meta, half=half)

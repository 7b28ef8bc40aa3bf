"""Typed configuration for every command; dumped into checkpoints, weights metadata and reports."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class UpscaleConfig:
    """Options of ``vsr upscale`` (and of the engine the benchmark reuses)."""

    weights: str = "srresnet-mse"
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    batch_size: int = 0  # 0 = automatic from the frame size and the device (Upscaler.auto_batch)
    tile: int = 0  # 0 = whole frames
    tile_overlap: int = 16
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    overwrite: bool = False
    skip_corrupt: bool = False
    quiet: bool = False
    segment_seconds: float = 10.0  # input seconds per segment of a video (0: one segment)
    resume: bool = False  # insist on continuing an interrupted run (a rerun continues one anyway)
    restart: bool = False  # discard what an interrupted run of the same output left
    jobs: int = 1  # segment workers (processes)


@dataclass
class TrainConfig:
    """Options of ``vsr train``."""

    data: list[str] = field(default_factory=list)
    val: str | None = None
    out: str = "runs/train"
    arch: str = "srresnet"  # srresnet | recurrent-srresnet (temporal: trained on synthetic sequences)
    seq_len: int = 1  # frames per training sequence: 1 for srresnet, >= 2 for a temporal arch
    motion: float = 4.0  # temporal arch: the camera's largest shift per frame along each axis, HR px (vsr.sequences)
    clips: list[str] = field(default_factory=list)  # temporal arch: real clips (frame folders, video files)
    clip_share: float | None = None  # of sequences from --clips when --data stills are given too (None: 0.5)
    core_lr: float = 1.0  # temporal arch: the SRResNet core's learning rate as a fraction of --lr (0: frozen)
    loss: str = "mse"  # mse | vgg | gan | perpix | psnr (per-picture log MSE)
    content: str = "mse"  # content loss of --loss gan: mse | vgg
    adv_weight: float = 1e-3
    perpix_schedule: str = "15000:10:1,20000:10:10,35000:1:10"  # until-step:w_mse:w_vgg,...
    vgg_weights: str = "../shared/weights/vgg19_features_conv54_fp16.pt"
    init: str | None = None  # generator weights to start from (e.g. an MSE model for the GAN phase)
    degradation: str = "bi"  # how LR is made: bi | bd | real | real-heavy, optionally NAME:key=value,... (vsr.degrade)
    val_degradation: str | None = None  # also validate on this bench condition (e.g. h264:crf=28), column val_psnr_deg
    steps: int = 10_000
    batch_size: int = 16
    crop: int = 96
    lr: float = 1e-4
    lr_min: float = 1e-4  # cosine decay from lr to lr_min over the steps; equal values = constant
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    val_every: int = 1000
    ckpt_every: int = 500
    keep_every: int = 0  # also keep the generator of every N-th step in snapshots/ (0 = never)
    log_every: int = 100
    max_seconds: float = 0  # stop (with a checkpoint) after this much wall time, checked at log rows; 0 = no limit
    compile: bool = False
    threads: int = 0  # 0 = torch default
    degrade_workers: int = 0  # threads drawing degraded batches ahead (0 = from the cores: vsr.trainer.degrade_workers)


@dataclass
class ServeConfig:
    """Options of ``vsr serve`` (limits are per request)."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    workdir: str = "vsr-serve"
    max_upload_mb: float = 512.0  # one video upload (/v1/jobs); the other bodies' limits follow from the pixel limits
    max_pixels: int = 2_000_000  # input pixels per image (H x W)
    max_batch: int = 16  # instances per /v1/predict request
    queue_length: int = 64  # pending batcher requests, and queued video jobs
    batch_window_ms: float = 5.0  # how long the batcher waits for more requests
    max_batch_frames: int = 8  # frames per device batch
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed to call the API
    keep_results_hours: float = 24.0  # finished jobs (and their files) are deleted after this; 0 = keep
    read_timeout_s: float = 30.0  # a request body that sends nothing for this long is answered 408
    keep_alive_s: float = 5.0  # idle keep-alive connections are closed after this
    docs: bool = True  # /docs (a self-contained page) and /openapi.json


def train_config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a ``TrainConfig`` from the dict stored in a checkpoint (unknown keys are an error)."""
    d = dict(d)
    if "betas" in d:
        d["betas"] = tuple(d["betas"])
    return TrainConfig(**d)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict of a config dataclass (safe for ``torch.save(..., weights_only)`` and JSON)."""
    d = asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

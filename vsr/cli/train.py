"""``vsr train``: train a generator on folders of HR images; ``vsr train export`` writes weights for `vsr upscale`."""
from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from vsr.cli import setup_logging, user_errors
from vsr.config import TrainConfig
from vsr.errors import VsrError

app = typer.Typer(rich_markup_mode=None,
                  help="Train a generator (`vsr train --data DIR ...`) and export it (`vsr train export RUN -o FILE`).")
DEFAULTS = TrainConfig()


class Loss(str, Enum):
    """``vsr.losses.LOSSES`` (spelt out here so that `--help` needs no torch)."""

    mse = "mse"
    vgg = "vgg"
    gan = "gan"
    perpix = "perpix"
    psnr = "psnr"


class Arch(str, Enum):
    """``vsr.trainer.ARCHS``."""

    srresnet = "srresnet"
    recurrent_srresnet = "recurrent-srresnet"
    window_srresnet = "window-srresnet"
    fusion_srresnet = "fusion-srresnet"


class Content(str, Enum):
    mse = "mse"
    vgg = "vgg"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Folder of HR training images (repeat for several).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoint.pt, log.csv, curves.png, grid.png.")] = Path(DEFAULTS.out),
    val: Annotated[Optional[Path], typer.Option(help="Folder of HR validation images (Y-PSNR, 4-px crop); for a temporal --arch also a folder of clip folders (e.g. vid4/GT), frames in order.")] = None,
    arch: Annotated[Arch, typer.Option(help="Generator: srresnet (single frames), recurrent-srresnet (streaming: the previous frame, output and a hidden map go back in) window-srresnet (frames t-2, t-1, t, nothing fed back) or fusion-srresnet (the optical-flow blend of srresnet-flow refined by a small learned network; train it with --core-lr 0); the temporal ones train on --clips and/or synthetic sequences from the --data images, --init srresnet-mse warm-starts them exactly.")] = Arch(DEFAULTS.arch),
    seq_len: Annotated[Optional[int], typer.Option(min=1, help="Frames per training sequence of a temporal --arch (default 5; at least 2).")] = None,
    motion: Annotated[float, typer.Option(min=0, help="Temporal --arch: the camera's largest shift per frame along each axis, in HR px.")] = DEFAULTS.motion,
    clips: Annotated[Optional[list[Path]], typer.Option("--clips", help="Temporal --arch: real clips to train on (repeat): a video file, or a folder where every folder of frames (in natural name order: im2 before im10) and every video is one clip.")] = None,
    clip_share: Annotated[Optional[float], typer.Option(min=0, max=1, help="With --clips and --data: the share of sequences cut from the clips (default 0.5); the rest move over the stills.")] = None,
    core_lr: Annotated[float, typer.Option(min=0, max=1, help="Temporal --arch: the SRResNet core's learning rate as a fraction of --lr (0 freezes it; the temporal layers learn at --lr).")] = DEFAULTS.core_lr,
    loss: Annotated[Loss, typer.Option(help="Generator loss: mse, vgg, gan, perpix, or psnr (the mean over pictures of the log of each one's MSE: what mean PSNR measures, so no picture dominates; the loss column is then in dB).")] = Loss(DEFAULTS.loss),
    content: Annotated[Content, typer.Option(help="Content loss of --loss gan.")] = Content(DEFAULTS.content),
    adv_weight: Annotated[float, typer.Option(min=0, help="Weight of the adversarial loss (gan, perpix).")] = DEFAULTS.adv_weight,
    perpix_schedule: Annotated[str, typer.Option(help="Per-Pix stages UNTIL_STEP:W_MSE:W_VGG,...")] = DEFAULTS.perpix_schedule,
    vgg_weights: Annotated[Path, typer.Option(help="Oxford VGG19 conv weights for the VGG loss.")] = Path(DEFAULTS.vgg_weights),
    init: Annotated[Optional[str], typer.Option(help="Start the generator from these weights (name or .pt).")] = None,
    degradation: Annotated[str, typer.Option(help="How LR is made: bi (MATLAB bicubic), bd, real (blur/noise/JPEG/H.264/H.265 chain), real-heavy; overrides as NAME:key=value,key=lo:hi (see vsr/degrade.py).")] = DEFAULTS.degradation,
    val_degradation: Annotated[Optional[str], typer.Option(help="Also validate on this bench condition, e.g. h264:crf=28 (column val_psnr_deg).")] = None,
    steps: Annotated[Optional[int], typer.Option(min=0, help=f"Total optimiser steps (default {DEFAULTS.steps}; with --resume: keep; more steps than the first run's run at --lr-min).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per step.")] = DEFAULTS.batch_size,
    crop: Annotated[int, typer.Option(min=4, help="HR crop size, a multiple of 4 (LR is crop/4).")] = DEFAULTS.crop,
    lr: Annotated[float, typer.Option(min=0, help="Adam learning rate (G and D).")] = DEFAULTS.lr,
    lr_min: Annotated[Optional[float], typer.Option(min=0, help="Cosine-decay the learning rate to this over --steps (default: constant).")] = None,
    beta1: Annotated[float, typer.Option(min=0, max=1, help="Adam beta1.")] = DEFAULTS.betas[0],
    beta2: Annotated[float, typer.Option(min=0, max=1, help="Adam beta2.")] = DEFAULTS.betas[1],
    seed: Annotated[int, typer.Option(min=0, help="Random seed (weights and crops).")] = DEFAULTS.seed,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N (under torchrun: one GPU per rank).")] = DEFAULTS.device,
    precision: Annotated[Precision, typer.Option(help="Training precision (auto: bf16 where the device has it).")] = Precision(DEFAULTS.precision),
    val_every: Annotated[int, typer.Option(min=0, help="Validate (and redraw curves and grid) every N steps (0 = at the end only).")] = DEFAULTS.val_every,
    ckpt_every: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps.")] = DEFAULTS.ckpt_every,
    keep_every: Annotated[int, typer.Option(min=0, help="Also keep the generator every N steps (RUN/snapshots/; export with --step; 0 = never).")] = DEFAULTS.keep_every,
    max_seconds: Annotated[Optional[float], typer.Option(min=0, help="Stop with a checkpoint after this many seconds of training, checked at log rows (resume to go on).")] = None,
    log_every: Annotated[int, typer.Option(min=1, help="Write a log.csv row every N steps.")] = DEFAULTS.log_every,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the generator.")] = False,
    degrade_workers: Annotated[Optional[int], typer.Option(min=0, help="Threads drawing degraded batches ahead of the training step (0 = one per core beside the loop's, up to 8; a machine setting: --resume may change it). The batches are the same whatever the number.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run folder from its checkpoint (its config is reused).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Train the SRResNet generator with the SRGAN recipe's losses (single process, or under torchrun)."""
    if ctx.invoked_subcommand is not None:
        return
    from vsr.trainer import resume_config, train  # torch is imported by the command, not by `--help`

    setup_logging(quiet)
    with user_errors(on_interrupt=f"checkpoint saved in {resume or out}; continue with --resume {resume or out}"):
        if resume is not None:
            cfg = resume_config(resume, steps=steps, max_seconds=max_seconds or 0, degrade_workers=degrade_workers)
        else:
            temporal = arch is not Arch.srresnet
            if not data and not (temporal and clips):
                raise VsrError("give at least one --data folder of HR training images"
                               + (" or --clips of real video" if temporal else ""))
            cfg = TrainConfig(data=[str(d) for d in data or []], val=str(val) if val else None, out=str(out),
                              arch=arch.value, seq_len=(5 if temporal else 1) if seq_len is None else seq_len,
                              motion=motion, clips=[str(c) for c in clips or []], clip_share=clip_share, core_lr=core_lr,
                              loss=loss.value,
                              content=content.value, adv_weight=adv_weight, perpix_schedule=perpix_schedule,
                              vgg_weights=str(vgg_weights), init=init, degradation=degradation,
                              val_degradation=val_degradation, steps=DEFAULTS.steps if steps is None else steps,
                              batch_size=batch_size, crop=crop, lr=lr, lr_min=lr if lr_min is None else lr_min,
                              betas=(beta1, beta2), seed=seed, device=device, precision=precision.value,
                              val_every=val_every, ckpt_every=ckpt_every, keep_every=keep_every, log_every=log_every,
                              max_seconds=max_seconds or 0, compile=compile, degrade_workers=degrade_workers or 0)
        run_dir = train(cfg, resume=resume is not None, quiet=quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        typer.echo(f"run saved in {run_dir}")


@app.command("export")
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder holding checkpoint.pt.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Weights file to write, e.g. weights/NAME.pt.")],
    name: Annotated[Optional[str], typer.Option(help="Model name stored in the metadata (default: file stem).")] = None,
    half: Annotated[bool, typer.Option(help="Store fp16 tensors (half the size).")] = False,
    step: Annotated[Optional[int], typer.Option(min=1, help="Export the snapshot kept at this step instead of the last checkpoint.")] = None,
) -> None:
    """Write the inference-only generator of a run (config as metadata) for `vsr upscale --weights`."""
    from vsr.trainer import export as export_run

    setup_logging(False)
    with user_errors():
        path = export_run(run_dir, output, name=name or output.stem, half=half, step=step)
    typer.echo(f"wrote {path}")

"""``vsr train``: train a generator on folders of HR images; ``vsr train export`` writes weights."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vsr.cli import setup_logging, user_errors
from vsr.config import TrainConfig
from vsr.errors import VsrError
from vsr.trainer import export as export_run
from vsr.trainer import train as run_training

app = typer.Typer(help="Train a generator (`vsr train --data DIR ...`) and export it (`vsr train export RUN -o FILE`).")


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Folder of HR training images (repeat for several).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoint.pt, log.csv.")] = Path("runs/train"),
    val: Annotated[Optional[Path], typer.Option(help="Folder of HR validation images (Y-PSNR, 4-px crop).")] = None,
    loss: Annotated[str, typer.Option(help="Loss: mse (vgg, gan, perpix: not yet).")] = "mse",
    steps: Annotated[int, typer.Option(help="Total optimiser steps.")] = 10_000,
    batch_size: Annotated[int, typer.Option(help="Crops per step.")] = 16,
    crop: Annotated[int, typer.Option(help="HR crop size (LR is crop/4).")] = 96,
    lr: Annotated[float, typer.Option(help="Adam learning rate at the start.")] = 1e-4,
    lr_min: Annotated[Optional[float], typer.Option(help="Cosine-decay the learning rate to this (default: constant).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16.")] = "auto",
    val_every: Annotated[int, typer.Option(help="Validate every N steps.")] = 1000,
    ckpt_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 500,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Train SRResNet with the MSE loss (the minimal loop; the GAN losses come with the full trainer)."""
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(quiet)
    if not data:
        typer.echo("error: give at least one --data folder of HR training images", err=True)
        raise typer.Exit(1)
    cfg = TrainConfig(data=[str(d) for d in data], val=str(val) if val else None, out=str(out), loss=loss, steps=steps,
                      batch_size=batch_size, crop=crop, lr=lr, lr_min=lr if lr_min is None else lr_min, seed=seed,
                      device=device, precision=precision, val_every=val_every, ckpt_every=ckpt_every)
    with user_errors(on_interrupt=f"checkpoint saved in {out}; continue with --resume"):
        run_dir = run_training(cfg, resume=resume, quiet=quiet)
    typer.echo(f"run saved in {run_dir}")


@app.command("export")
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder holding checkpoint.pt.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Weights file to write, e.g. weights/NAME.pt.")],
    name: Annotated[Optional[str], typer.Option(help="Model name stored in the metadata (default: file stem).")] = None,
    half: Annotated[bool, typer.Option(help="Store fp16 tensors (half the size).")] = False,
) -> None:
    """Write the inference-only weights of a run (with its config as metadata) for `vsr upscale --weights`."""
    setup_logging(False)
    with user_errors():
        if not (run_dir / "checkpoint.pt").is_file():
            raise VsrError(f"{run_dir}: no checkpoint.pt in this folder")
        path = export_run(run_dir, output, name=name or output.stem, half=half)
    typer.echo(f"wrote {path}")

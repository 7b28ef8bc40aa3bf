"""``vsr models``: the shipped models, or what a weights file is (ours or a community model spandrel knows)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vsr.cli import register, setup_logging, user_errors


def _describe(name: str, loaded) -> list[str]:  # noqa: ANN001  (LoadedWeights; torch is imported lazily)
    d = loaded.descriptor
    size = []
    if d.size_multiple > 1:
        size.append(f"padded to a multiple of {d.size_multiple}")
    if d.min_size:
        size.append(f"at least {d.min_size} px")
    if d.square:
        size.append("square")
    lines = [f"{name}: {d.arch} x{d.scale}",
             f"  file: {loaded.path.name} ({'vsr format' if d.source == 'vsr' else 'community model, read by spandrel'})",
             f"  architecture: {loaded.meta.get('architecture', d.arch)}, {d.num_parameters:,} parameters, "
             f"purpose {d.purpose}",
             f"  precisions: {', '.join(d.precisions)}; tiling: {'allowed' if d.tiling else 'no (needs whole frames)'}"
             + (f"; input {', '.join(size)}" if size else "")]
    if d.temporal:
        lines.append("  temporal: yes (frames in order, a state carried from frame to frame; reset at scene cuts)")
    if loaded.meta.get("tags"):
        lines.append(f"  tags: {', '.join(map(str, loaded.meta['tags']))}")
    if d.source != "vsr":
        lines.append("  licence: not recorded in the file; check where you downloaded it")
    return lines


def models(
    path: Annotated[Optional[Path], typer.Argument(help="A weights file to describe (.pt of ours, or .pth/.pt/.ckpt/.safetensors of a community model).")] = None,
) -> None:
    """List the shipped models, or say what a weights file is (architecture, scale, parameters, precisions)."""
    from vsr import weights as weights_io

    setup_logging(False)
    with user_errors():
        if path is not None:
            for line in _describe(str(path), weights_io.load(str(path))):
                typer.echo(line)
            return
        for name in weights_io.SHIPPED:
            role = {weights_io.DEFAULT_WEIGHTS: " (default for images and folders of images)",
                    weights_io.DEFAULT_VIDEO_WEIGHTS: " (default for videos and folders holding one)"}.get(name, "")
            lines = _describe(name + role, weights_io.load(name))
            typer.echo("\n".join(lines))
        typer.echo("how each was trained and its measured quality: weights/MODEL_CARD.md")


register(models)

"""``vsr bench``: PSNR/SSIM of a model against ground truth (Vid4, Set5, Set14, or a folder), beside bicubic."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from vsr.cli import register, setup_logging, user_errors
from vsr.config import UpscaleConfig
from vsr.weights import DEFAULT_WEIGHTS


def bench(
    dataset: Annotated[str, typer.Argument(help="vid4, set5, set14, or a folder of HR images (LR made by bicubic x1/4).")],
    data: Annotated[Optional[Path], typer.Option(help="Dataset folder (default: ../shared/datasets/<name> beside the repo).")] = None,
    weights: Annotated[Optional[list[str]], typer.Option(help="Model name or .pt path; repeat for side-by-side rows.")] = None,
    degradation: Annotated[Optional[list[str]], typer.Option(help="LR condition; repeat for one table per condition: bi (bicubic x4), bd (Gaussian 1.6 + x4 subsampling), h264:crf=N[,preset=P,gop=G,bframes=B], h265:crf=N, jpeg:q=N, or BASE+STEP (bd+h264:crf=23).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto | fp32 | fp16 | bf16.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Frames per model batch (0 = auto: from the frame size and free memory).")] = 0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    save_frames: Annotated[Optional[Path], typer.Option(help="Keep the upscaled frames as PNGs under this folder.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write an HTML report (tables, chart, comparison crops) here.")] = None,
    vmaf: Annotated[bool, typer.Option("--vmaf", help="Video sets: also VMAF (v0.6.1 model) of the model and of bicubic; needs vmaf-torch (pip install 'vsr[vmaf]'), about 0.5 s a frame at 720x576 on one CPU core.")] = False,
) -> None:
    """Measure PSNR/SSIM (Y and RGB) per clip/image with the literature's protocol, plus speed."""
    from vsr import bench as bench_lib  # torch and the engine are imported by the command, not by `--help`
    from vsr.degrade import parse_condition
    from vsr.pipeline import build_engine
    from vsr.report import write_report

    setup_logging(False)
    results = []
    with user_errors():
        conditions = [parse_condition(d) for d in degradation or ["bi"]]  # bad strings fail before any work
        for name in weights or [DEFAULT_WEIGHTS]:
            cfg = UpscaleConfig(weights=name, device=device, precision=precision, batch_size=batch_size)
            engine, _, _ = build_engine(cfg)
            for cond in conditions:
                res = bench_lib.run(dataset, engine, weights_name=name, data=data, degradation=cond,
                                    save_frames=save_frames, with_vmaf=vmaf)
                typer.echo(bench_lib.format_table(res) + "\n")
                results.append(res)
        if len(results) > 1:
            typer.echo(bench_lib.format_summary(results) + "\n")
            if vmaf:
                typer.echo(bench_lib.format_summary(results, "vmaf") + "\n")
        if json_out:
            json_out.write_text(json.dumps([r.to_dict() for r in results], indent=2))
            typer.echo(f"wrote {json_out}")
        if report:
            typer.echo(f"wrote {write_report(results, report)}")


register(bench)

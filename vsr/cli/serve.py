"""``vsr serve``: the HTTP service (JSON batch prediction, images, video jobs) on one model."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from vsr.cli import register, setup_logging, user_errors
from vsr.config import ServeConfig, UpscaleConfig
from vsr.weights import DEFAULT_WEIGHTS

D = ServeConfig()


def serve(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = D.host,
    port: Annotated[int, typer.Option(help="TCP port.")] = D.port,
    weights: Annotated[str, typer.Option(help="Shipped model name or .pt file.")] = DEFAULT_WEIGHTS,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto | fp32 | fp16 | bf16.")] = "auto",
    token: Annotated[Optional[str], typer.Option(help="Require 'Authorization: Bearer TOKEN' (or set VSR_TOKEN).")] = None,
    workdir: Annotated[str, typer.Option(help="Folder for the job table and job files (survives restarts).")] = D.workdir,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body or upload.")] = D.max_upload_mb,
    max_pixels: Annotated[int, typer.Option(help="Largest input image or frame, in pixels.")] = D.max_pixels,
    max_batch: Annotated[int, typer.Option(help="Most instances in one /v1/predict request.")] = D.max_batch,
    queue_length: Annotated[int, typer.Option(help="Most pending requests (and queued jobs) before 429.")] = D.queue_length,
    batch_window_ms: Annotated[float, typer.Option(help="How long to gather concurrent requests into one batch.")] = D.batch_window_ms,
    max_batch_frames: Annotated[int, typer.Option(help="Most frames in one device batch.")] = D.max_batch_frames,
) -> None:
    """Serve the model over HTTP: POST /v1/predict, /v1/images, /v1/jobs; docs at /docs."""
    import uvicorn  # the web stack is imported only by this command

    from vsr.pipeline import build_engine
    from vsr.serve import create_app

    setup_logging(False)
    cfg = ServeConfig(host=host, port=port, token=token, workdir=workdir, max_upload_mb=max_upload_mb,
                      max_pixels=max_pixels, max_batch=max_batch, queue_length=queue_length,
                      batch_window_ms=batch_window_ms, max_batch_frames=max_batch_frames)
    with user_errors():
        engine, loaded, _ = build_engine(UpscaleConfig(weights=weights, device=device, precision=precision))
        app = create_app(engine, loaded.meta | {"file": str(loaded.path)}, cfg)
    uvicorn.run(app, host=host, port=port, log_level="warning")


register(serve)

"""``vsr serve``: the HTTP service (array batch prediction, images, video jobs) on one model."""
from __future__ import annotations

import logging
import os
import socket
from typing import Annotated, Optional

import typer

from vsr.cli import register, setup_logging, user_errors
from vsr.config import ServeConfig, UpscaleConfig
from vsr.errors import VsrError
from vsr.weights import DEFAULT_WEIGHTS

D = ServeConfig()
ANY_ADDRESS = ("0.0.0.0", "::", "")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), so the URL printed works at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise VsrError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port "
                       "(0 picks a free one) or --host") from None
    return sock


def page_url(host: str, port: int) -> str:
    """The address to open in a browser on this machine."""
    name = "127.0.0.1" if host in ANY_ADDRESS else host.strip("[]")
    return f"http://[{name}]:{port}/" if ":" in name else f"http://{name}:{port}/"


def serve(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default; then only loopback Host names are answered).")] = D.host,
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = D.port,
    weights: Annotated[str, typer.Option(help="Shipped model name or .pt file.")] = DEFAULT_WEIGHTS,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto | fp32 | fp16 | bf16.")] = "auto",
    token: Annotated[Optional[str], typer.Option(help="Require 'Authorization: Bearer TOKEN' (or set VSR_TOKEN); must not be empty.")] = None,
    workdir: Annotated[str, typer.Option(help="Folder for the job table and job files (survives restarts).")] = D.workdir,
    max_upload_mb: Annotated[float, typer.Option(help="Largest video upload (/v1/jobs); the limits of the other bodies follow from --max-pixels and --max-batch.", min=0.001)] = D.max_upload_mb,
    max_pixels: Annotated[int, typer.Option(help="Largest input image or frame, in pixels.", min=1)] = D.max_pixels,
    max_batch: Annotated[int, typer.Option(help="Most instances in one /v1/predict request.", min=1)] = D.max_batch,
    queue_length: Annotated[int, typer.Option(help="Most pending requests (and queued jobs) before 429.", min=1)] = D.queue_length,
    batch_window_ms: Annotated[float, typer.Option(help="How long to gather concurrent requests into one batch.", min=0)] = D.batch_window_ms,
    max_batch_frames: Annotated[int, typer.Option(help="Most frames in one device batch.", min=1)] = D.max_batch_frames,
    cors_origin: Annotated[Optional[list[str]], typer.Option(help="A browser origin allowed to call the API, e.g. http://localhost:3000 (repeatable); other Origin headers get 403.")] = None,
    keep_results: Annotated[float, typer.Option(help="Hours a finished job and its files are kept (0 = until DELETE).", min=0)] = D.keep_results_hours,
    read_timeout: Annotated[float, typer.Option(help="Seconds a request body may send nothing before 408.", min=0.1)] = D.read_timeout_s,
    docs: Annotated[bool, typer.Option(help="Serve /docs (a self-contained page, no CDN) and /openapi.json (behind the token if one is set).")] = D.docs,
) -> None:
    """Serve the model over HTTP: a web page at /, and POST /v1/predict, /v1/images, /v1/jobs; docs at /docs."""
    import uvicorn  # the web stack is imported only by this command

    from vsr.pipeline import build_engine
    from vsr.serve import create_app

    setup_logging(False)
    logging.getLogger("vsr.serve").setLevel(logging.INFO)
    with user_errors():
        engine, loaded, _ = build_engine(UpscaleConfig(weights=weights, device=device, precision=precision))
        sock = bind(host, port)
    with sock:
        port = sock.getsockname()[1]  # the real one when --port 0 (the page's own Origin names it)
        cfg = ServeConfig(host=host, port=port, token=token if token is not None else os.environ.get("VSR_TOKEN"),
                          workdir=workdir, max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_batch=max_batch,
                          queue_length=queue_length, batch_window_ms=batch_window_ms, max_batch_frames=max_batch_frames,
                          cors_origins=list(cors_origin or []), keep_results_hours=keep_results,
                          read_timeout_s=read_timeout, docs=docs)
        with user_errors():
            app = create_app(engine, loaded.meta | {"file": str(loaded.path)}, cfg)
        url = page_url(host, port)
        where = " (listening on every address of this machine)" if host in ANY_ADDRESS else ""
        typer.echo(f"vsr serve: open {url} in a browser{where}; the HTTP API is at {url}docs; Ctrl-C stops")
        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                timeout_keep_alive=int(max(1, cfg.keep_alive_s)))
        uvicorn.Server(config).run(sockets=[sock])


register(serve)

"""The FastAPI app: routes, the admission layer around them, and the lifespan that owns the threads.

Routes are thin: every byte of CPU work (JSON, .npy, image decode and encode, array conversion) runs
in a worker thread, so the event loop only moves bytes and ``/healthz`` answers while a large
request is being handled. The model runs in the batcher thread (requests) or the job thread (videos),
one call at a time (``SerialUpscaler``).
"""
from __future__ import annotations

import asyncio
import html
import logging
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, Security, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from vsr.config import ServeConfig
from vsr.errors import VsrError
from vsr.pipeline import Engine
from vsr.serve import previews, web
from vsr.serve import requests as rq
from vsr.serve.batcher import Batcher, Busy, SerialUpscaler
from vsr.serve.guard import LOOPBACK_NAMES, Guard, is_loopback
from vsr.serve.jobs import JobStore, JobWorker, QueueFull, job_view
from vsr.video import ContainerCaps, VideoReader, default_encoder, encoder_defaults
from vsr.weights import shipped_spec

log = logging.getLogger("vsr.serve")
PUBLIC_META = ("name", "arch", "arch_kwargs", "input_range", "output_range", "steps", "note")
PREVIEW_KINDS = ("result", "bicubic")
PREVIEW_DECODES = 2  # preview and thumbnail decodes running at once; more wait (up to --queue-length, then 429)


def public_meta(meta: dict[str, Any], scale: int) -> dict[str, Any]:
    """The model's description without anything that names this machine's files (weights, datasets);
    a shipped model also gets its one-line ``description`` and measured ``psnr`` (dB by benchmark)."""
    keep = {k: meta[k] for k in PUBLIC_META if k in meta}
    if meta.get("file"):
        keep["file"] = Path(str(meta["file"])).name
    spec = shipped_spec(meta.get("file"))
    if spec is not None:
        keep |= {"description": spec.description, "psnr": dict(spec.psnr)}
    return keep | {"scale": scale}


def job_encoders() -> dict[str, dict[str, Any]]:
    """The encoders a job may choose (those this FFmpeg has), their CRF range and vsr's default CRF."""
    import av

    offered = {}
    for name, bounds in rq.JOB_ENCODERS.items():
        if name in av.codecs_available:
            offered[name] = {"crf": list(bounds) if bounds else None, "default_crf": encoder_defaults(name)[0] or None}
    return offered


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _docs_page(schema: dict[str, Any]) -> str:
    """A self-contained page listing the endpoints (no scripts, nothing fetched from a CDN)."""
    rows = []
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            text = op.get("description") or op.get("summary") or ""
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(text)}</td></tr>")
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(schema['info']['title'])} API</title>"
            f"<h1>{html.escape(schema['info']['title'])} API</h1><p>{html.escape(schema['info'].get('description', ''))}"
            "</p><p>Machine-readable schema: <a href=openapi.json>openapi.json</a>.</p>"
            f"<table border=1 cellpadding=4><tr><th>method</th><th>path</th><th>what</th></tr>{''.join(rows)}</table>")


def allowed_hosts(cfg: ServeConfig) -> set[str] | None:
    """Host names a loopback-bound server answers to (None: any, for a server bound to a public address)."""
    if not is_loopback(cfg.host):
        return None
    return {*LOOPBACK_NAMES, cfg.host.strip("[]").lower()}


def allowed_origins(cfg: ServeConfig) -> set[str]:
    own = {f"http://{h}:{cfg.port}" for h in ("127.0.0.1", "localhost", "[::1]", cfg.host)}
    return own | set(cfg.cors_origins)


def create_app(engine: Engine, meta: dict[str, Any], cfg: ServeConfig) -> FastAPI:
    """The ASGI app; the batcher and job worker start and stop with the app's lifespan."""
    if cfg.token is not None and not cfg.token.strip():
        raise VsrError("--token is empty: give a real token, or leave the option out to serve without one")
    limits = rq.Limits(max_pixels=cfg.max_pixels, max_batch=cfg.max_batch,
                       max_video_bytes=int(cfg.max_upload_mb * 1024 * 1024))
    Image.MAX_IMAGE_PIXELS = cfg.max_pixels  # Pillow's own bomb check, at our limit (ours runs first)
    model = SerialUpscaler(engine.upscaler)
    # Jobs run with the caller's engine settings (batch size, encoder), as `vsr upscale` would.
    job_engine = engine.like(model)
    state: dict[str, Any] = {}
    encoders = job_encoders()
    result_caps = ContainerCaps.for_path(f"result{rq.RESULT_SUFFIX}")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AsyncExitStack() as stack:
            store = stack.enter_context(JobStore(Path(cfg.workdir)))
            recovered = store.recover()
            if any(recovered.values()):
                log.info("recovered the job table: %(requeued)d interrupted job(s) queued again, "
                         "%(orphan_folders)d orphan folder(s) and %(stale_temps)d stale temp file(s) removed",
                         recovered)
            state["store"] = store
            state["worker"] = stack.enter_context(JobWorker(job_engine, store, keep_hours=cfg.keep_results_hours))
            state["batcher"] = stack.enter_context(Batcher(model, window_ms=cfg.batch_window_ms,
                                                           max_frames=cfg.max_batch_frames,
                                                           queue_length=cfg.queue_length))
            state["recovered"] = recovered
            yield

    docs = cfg.docs
    app = FastAPI(title="vsr", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if docs else None,
                  description="4x super-resolution: batch prediction (JSON or .npy), images and video jobs.")
    security = [Security(HTTPBearer(description="the server's --token"))] if cfg.token else []

    # The page is public (a browser cannot send a token with a navigation); it asks for the token itself.
    # Its assets are fixed bytes with a strict policy: scripts and styles from this server only.
    assets = web.load_assets()
    page_headers = {"content-security-policy": "default-src 'self'; img-src 'self' blob: data:; "
                    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                    "x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "cache-control": "no-cache"}

    def asset_route(body: bytes, media: str):
        async def serve_asset() -> Response:
            return Response(body, media_type=media, headers=page_headers)
        return serve_asset

    for route, (body, media) in assets.items():
        app.add_api_route(route, asset_route(body, media), methods=["GET"], include_in_schema=False)

    if docs:
        @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
        async def docs_page() -> str:
            return _docs_page(app.openapi())

    async def upscale(frames: np.ndarray) -> np.ndarray:
        try:
            fut = state["batcher"].submit(frames)
        except Busy:
            raise _error(429, "too many requests queued; retry shortly") from None
        return await asyncio.wrap_future(fut)

    async def off_loop(fn, *args):
        """``fn(*args)`` in a worker thread; a ``RequestError`` becomes its HTTP answer."""
        try:
            return await run_in_threadpool(fn, *args)
        except rq.RequestError as exc:
            raise _error(exc.status, exc.message) from None

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness: ok while the batcher and the job worker threads run (no token needed)."""
        problems = [name for name in ("batcher", "worker") if name in state and not state[name].alive]
        body = {"status": "unhealthy" if problems else "ok", "device": str(engine.upscaler.device),
                "precision": engine.upscaler.precision}
        if problems:
            body["stopped"] = problems
        return JSONResponse(body, status_code=503 if problems else 200)

    @app.get("/v1/models", dependencies=security)
    async def models() -> dict[str, Any]:
        """The model served: name, architecture, scale (no file paths), ``temporal`` (a job's frames go through it
        in order with its state; a picture of /v1/predict or /v1/images is a stream of one frame), its description
        and PSNR when shipped; ``encoders``: the video encoders a job may ask for, with their CRF ranges;
        ``limits``: the largest upload and image, so a client can say so before sending a file."""
        model = public_meta(meta, engine.upscaler.scale) | {"temporal": engine.temporal}
        return {"models": [model], "encoders": encoders,
                "limits": {"max_upload_bytes": limits.max_video_bytes, "max_pixels": limits.max_pixels}}

    @app.post("/v1/predict", dependencies=security, response_class=Response,
              responses={200: {"content": {rq.JSON: {}, rq.NPY: {}}}, 415: {}})
    async def predict(request: Request) -> Response:
        """``{"instances": N x H x W x 3}`` (uint8 0-255 or floats 0-1) -> ``{"predictions": N x 4H x 4W x 3}``;
        or an ``application/x-npy`` body; ``Accept: application/x-npy`` answers with an .npy file."""
        media = rq.media_type(request.headers.get("content-type"))
        if media not in (rq.JSON, rq.NPY):
            raise _error(415, f"Content-Type must be {rq.JSON} or {rq.NPY}")
        body = await request.body()
        parse = rq.parse_npy_instances if media == rq.NPY else rq.parse_json_instances
        frames = await off_loop(parse, body, limits)
        del body
        out_media = rq.response_media(request.headers.get("accept"))
        out = await upscale(frames)
        return Response(await off_loop(rq.encode_predictions, out, out_media), media_type=out_media)

    @app.post("/v1/images", dependencies=security, response_class=Response,
              responses={200: {"content": {"image/png": {}}}})
    async def images(file: UploadFile = File(...)) -> Response:
        """An image file (PNG, JPEG, WebP, BMP, TIFF) in, its 4x PNG out."""
        try:
            suffix = rq.upload_suffix(file.filename, rq.IMAGE_FORMATS)
        except rq.RequestError as exc:
            raise _error(exc.status, exc.message) from None
        data = await file.read()
        frames = await off_loop(rq.decode_image, data, suffix, limits)
        del data
        out = await upscale(frames)
        return Response(await off_loop(rq.encode_png, out[0]), media_type="image/png")

    def admit_job(file: UploadFile, codec: str | None, crf: str | None) -> dict[str, Any]:
        """Store the upload in a new job folder, check it and its options, queue it (all or nothing); in a
        worker thread."""
        suffix = rq.upload_suffix(file.filename, rq.VIDEO_CONTAINERS)
        store: JobStore = state["store"]
        if store.queued() >= cfg.queue_length:  # early, cheap; create() checks again atomically
            raise rq.RequestError(429, "the job queue is full; retry later")
        with store.admit() as (job_id, folder):
            path = folder / f"input{suffix}"
            file.file.seek(0)
            with open(path, "wb") as f:
                while chunk := file.file.read(1 << 20):
                    f.write(chunk)
            try:
                with VideoReader(path) as reader:
                    info = reader.info
                family = info.format_name
            except VsrError as exc:
                raise rq.RequestError(415, rq.public_message(str(exc).split(": ", 1)[-1])) from None
            if rq.VIDEO_CONTAINERS[suffix] not in family.split(","):
                raise rq.RequestError(415, f"the file is {family.split(',')[0]}, not {suffix[1:]} as its name says")
            rq.check_pixels(info.height, info.width, limits)
            options = rq.parse_job_options(codec, crf, input_encoder=engine.settings.codec
                                           or default_encoder(info.codec, result_caps), available=set(encoders))
            try:
                return store.create(job_id, path.name, info.expected_frames, max_queued=cfg.queue_length,
                                    name=rq.upload_name(file.filename), options=options)
            except QueueFull:
                raise rq.RequestError(429, "the job queue is full; retry later") from None

    @app.post("/v1/jobs", status_code=202, dependencies=security)
    async def create_job(file: UploadFile = File(...), codec: str | None = Form(None),
                         crf: str | None = Form(None)) -> dict[str, Any]:
        """Upload a clip (mp4, m4v, mov, mkv, webm, avi); it is upscaled in the background into Matroska.
        Optional form fields: ``codec`` (one of ``GET /v1/models``' ``encoders``; default: as the input) and
        ``crf``. Poll ``GET /v1/jobs/{id}``, fetch ``/v1/jobs/{id}/result``."""
        job = await off_loop(admit_job, file, codec, crf)
        state["worker"].wake.set()
        log.info("job %s queued", job["id"])
        return job_view(job)

    def job_or_404(job_id: str) -> dict[str, Any]:
        job = state["store"].get(job_id)
        if job is None:
            raise _error(404, f"no job {rq.short(job_id, 40)}")
        return job

    @app.get("/v1/jobs/{job_id}", dependencies=security)
    async def job_status(job_id: str) -> dict[str, Any]:
        """A job's state and progress."""
        return job_view(job_or_404(job_id))

    @app.get("/v1/jobs", dependencies=security)
    async def list_jobs() -> dict[str, Any]:
        """This server's jobs, newest first (at most 200)."""
        return {"jobs": [job_view(job) for job in state["store"].list()]}

    decodes = asyncio.Semaphore(PREVIEW_DECODES)
    waiting = [0]

    async def decode(fn, *args):
        """``fn(*args)`` in a worker thread, at most ``PREVIEW_DECODES`` at once; 429 when too many wait."""
        if waiting[0] >= cfg.queue_length:
            raise _error(429, "too many preview requests queued; retry shortly")
        waiting[0] += 1
        try:
            async with decodes:
                return await off_loop(fn, *args)
        finally:
            waiting[0] -= 1

    def job_file(job: dict[str, Any], name: str) -> Path:
        path = state["store"].folder(job["id"]) / name
        if not path.is_file():
            raise _error(409, f"job {job['id']} is {job['status']}; its files were removed")
        return path

    @app.get("/v1/jobs/{job_id}/preview", dependencies=security, response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def job_preview(job_id: str, frame: str = "0", kind: str = "result") -> Response:
        """One frame of a finished job as PNG: ``kind=result`` the upscaled frame, ``kind=bicubic`` the same input
        frame resized by bicubic to the result's size (for a before/after comparison); ``frame`` 0-based."""
        job = job_or_404(job_id)
        if kind not in PREVIEW_KINDS:
            raise _error(422, f"kind must be one of {', '.join(PREVIEW_KINDS)}, got {rq.short(kind)}")
        if job["status"] != "done":
            raise _error(409, f"job {job_id} is {job['status']}, not done: previews come with the result")
        index = await off_loop(rq.parse_frame_index, frame, job["frames_total"])
        source = JobStore.result_path(state["store"].folder(job_id)) if kind == "result" else job_file(job, job["filename"])

        def render() -> bytes:
            try:
                image = previews.frame_at(source, index)
            except (IndexError, VsrError) as exc:
                raise rq.RequestError(500, rq.public_message(str(exc))) from None
            return previews.png(image if kind == "result" else previews.bicubic(image, engine.upscaler.scale))

        return Response(await decode(render), media_type="image/png", headers={"cache-control": "private, max-age=3600"})

    @app.get("/v1/jobs/{job_id}/thumbnail", dependencies=security, response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    async def job_thumbnail(job_id: str) -> Response:
        """The first frame of a job's input as a small JPEG (160 pixels wide at most), in any state but cancelled."""
        job = job_or_404(job_id)
        source = job_file(job, job["filename"])

        def render() -> bytes:
            try:
                return previews.thumbnail(source)
            except (IndexError, VsrError) as exc:
                raise rq.RequestError(500, rq.public_message(str(exc))) from None

        return Response(await decode(render), media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    @app.get("/v1/jobs/{job_id}/result", dependencies=security)
    async def job_result(job_id: str) -> FileResponse:
        """The finished job's 4x video (Matroska)."""
        job = job_or_404(job_id)
        if job["status"] != "done":
            raise _error(409, f"job {job_id} is {job['status']}, not done")
        path = JobStore.result_path(state["store"].folder(job_id))
        return FileResponse(path, filename=rq.result_name(job.get("name") or "", job_id), media_type="video/x-matroska")

    @app.delete("/v1/jobs/{job_id}", dependencies=security)
    async def delete_job(job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job; delete a finished one with its files."""
        job = job_or_404(job_id)
        store: JobStore = state["store"]
        if job["status"] == "queued" and store.cancel_queued(job_id):
            return job_view(store.get(job_id))
        if store.delete(job_id):
            return job_view(job) | {"status": "deleted"}
        state["worker"].cancel.add(job_id)  # running: stopped at its next frame
        return job_view(store.get(job_id) or job)

    app.add_middleware(Guard, token=cfg.token, body_limit=limits.body_limit, allowed_hosts=allowed_hosts(cfg),
                       allowed_origins=allowed_origins(cfg), public_paths={"/healthz", *assets},
                       read_timeout=cfg.read_timeout_s)
    if cfg.cors_origins:  # outside the guard: preflights carry no token
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["authorization", "content-type", "accept"])
    return app

"""The HTTP service: batch prediction on JSON arrays, image upscaling, and persistent video jobs.

One process owns the model. Requests for arrays and images go through a ``Batcher`` thread that
gathers what arrives within a short window into one device batch (dynamic batching); video jobs live
in a SQLite table plus a work folder and run one at a time through the same streaming engine as
``vsr upscale``. Jobs that were queued or running when the server stopped are run again at start-up.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import sqlite3
import threading
import time
import uuid
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from vsr.config import ServeConfig
from vsr.errors import VsrError
from vsr.pipeline import Engine
from vsr.video import VideoReader


class Busy(Exception):
    """The batcher queue is full."""


class Batcher:
    """Gathers requests that arrive within ``window_ms`` into one model call per frame shape and dtype."""

    def __init__(self, engine: Engine, *, window_ms: float, max_frames: int, queue_length: int) -> None:
        self.upscaler = engine.upscaler
        self.window = window_ms / 1000.0
        self.max_frames = max_frames
        self.queue: queue.Queue = queue.Queue(maxsize=queue_length)
        self.calls = 0  # model calls made (for the load test's batching figure)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vsr-batcher", daemon=True)
        self._thread.start()

    def submit(self, frames: np.ndarray) -> Future:
        """Queue (N, H, W, 3) frames (uint8 0-255 or float32 0-1); the future gets the 4x frames."""
        fut: Future = Future()
        try:
            self.queue.put_nowait((frames, fut))
        except queue.Full:
            raise Busy from None
        return fut

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self, frames: np.ndarray) -> np.ndarray:
        if frames.dtype == np.float32:
            x = torch.from_numpy(frames).to(self.upscaler.device).permute(0, 3, 1, 2)
            return self.upscaler.run(x).permute(0, 2, 3, 1).cpu().numpy()
        return self.upscaler.upscale(frames)

    def _loop(self) -> None:
        pending: list[tuple[np.ndarray, Future]] = []
        while not self._stop.is_set():
            if not pending:
                try:
                    pending.append(self.queue.get(timeout=0.1))
                except queue.Empty:
                    continue
            deadline = time.perf_counter() + self.window
            while sum(len(f) for f, _ in pending) < self.max_frames:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    pending.append(self.queue.get(timeout=left))
                except queue.Empty:
                    break
            key = (pending[0][0].shape[1:], pending[0][0].dtype)
            group = [p for p in pending if (p[0].shape[1:], p[0].dtype) == key]
            pending = [p for p in pending if (p[0].shape[1:], p[0].dtype) != key]
            try:
                out = self._run(np.concatenate([f for f, _ in group]))
                self.calls += 1
                start = 0
                for frames, fut in group:
                    fut.set_result(out[start : start + len(frames)])
                    start += len(frames)
            except Exception as exc:  # handed to every waiting request
                for _, fut in group:
                    fut.set_exception(exc)


class JobCancelled(Exception):
    """Raised from the progress callback to stop a running job."""


class JobStore:
    """The SQLite job table and the per-job work folders."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(str(workdir / "jobs.sqlite"), check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        with self.lock, self.db:
            self.db.execute("""CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, status TEXT NOT NULL, filename TEXT NOT NULL, frames_done INTEGER DEFAULT 0,
                frames_total INTEGER DEFAULT 0, fps REAL DEFAULT 0, error TEXT, note TEXT,
                created REAL NOT NULL, updated REAL NOT NULL)""")

    def folder(self, job_id: str) -> Path:
        return self.dir / "jobs" / job_id

    def create(self, job_id: str, filename: str, frames_total: int) -> None:
        now = time.time()
        with self.lock, self.db:
            self.db.execute("INSERT INTO jobs (id, status, filename, frames_total, created, updated) VALUES (?,?,?,?,?,?)",
                            (job_id, "queued", filename, frames_total, now, now))

    def update(self, job_id: str, **fields: Any) -> None:
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.lock, self.db:
            self.db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row else None

    def next_queued(self) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1").fetchone()
        return dict(row) if row else None

    def count(self, status: str) -> int:
        with self.lock:
            return int(self.db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0])

    def recover(self) -> int:
        """Jobs interrupted by a stop are queued again (their partial output is discarded)."""
        with self.lock, self.db:
            cur = self.db.execute("UPDATE jobs SET status = 'queued', frames_done = 0, "
                                  "note = 'interrupted by a server restart; run again' WHERE status = 'running'")
            return cur.rowcount


class JobWorker:
    """Runs queued jobs one at a time through ``Engine.upscale_video``."""

    def __init__(self, engine: Engine, store: JobStore) -> None:
        self.engine, self.store = engine, store
        self.cancel: set[str] = set()
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vsr-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.wake.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.next_queued()
            if job is None:
                self.wake.wait(timeout=0.5)
                self.wake.clear()
                continue
            self._run(job)

    def _run(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        folder = self.store.folder(job_id)
        src = folder / job["filename"]
        dst = folder / f"result{src.suffix}"
        self.store.update(job_id, status="running", frames_done=0)
        done = [0]
        started = time.perf_counter()

        def progress(n: int) -> None:
            if job_id in self.cancel or self._stop.is_set():
                raise JobCancelled
            done[0] += n
            if done[0] % 5 == 0:
                self.store.update(job_id, frames_done=done[0], fps=done[0] / (time.perf_counter() - started))

        try:
            result = self.engine.upscale_video(src, dst, overwrite=True, progress=progress)
            notes = [job["note"]] * bool(job.get("note")) + result.notes
            self.store.update(job_id, status="done", frames_done=result.frames_out, frames_total=result.frames_in,
                              fps=result.fps, note="; ".join(notes) or None)
        except JobCancelled:
            if self._stop.is_set() and job_id not in self.cancel:
                return  # server stopping: stays 'running', recovered at the next start
            self.store.update(job_id, status="cancelled")
            shutil.rmtree(folder, ignore_errors=True)
        except Exception as exc:  # recorded on the job, never lost
            self.store.update(job_id, status="failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _job_view(job: dict[str, Any]) -> dict[str, Any]:
    view = {k: job[k] for k in ("id", "status", "frames_done", "frames_total", "fps", "error", "note")}
    view["progress"] = round(job["frames_done"] / job["frames_total"], 4) if job["frames_total"] else None
    return view


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def create_app(engine: Engine, meta: dict[str, Any], cfg: ServeConfig) -> FastAPI:
    """The ASGI app; the batcher and job worker start and stop with the app's lifespan."""
    state: dict[str, Any] = {}
    max_bytes = int(cfg.max_upload_mb * 1024 * 1024)
    token = cfg.token or os.environ.get("VSR_TOKEN")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = JobStore(Path(cfg.workdir))
        recovered = store.recover()
        state["store"] = store
        state["batcher"] = Batcher(engine, window_ms=cfg.batch_window_ms, max_frames=cfg.max_batch_frames,
                                   queue_length=cfg.queue_length)
        state["worker"] = JobWorker(engine, store)
        state["recovered"] = recovered
        yield
        state["worker"].close()
        state["batcher"].close()

    app = FastAPI(title="vsr", version="1", lifespan=lifespan,
                  description="4x super-resolution: JSON batch prediction, images and video jobs.")

    def auth(request: Request) -> None:
        if token and request.headers.get("authorization") != f"Bearer {token}":
            raise _error(401, "missing or wrong bearer token")

    async def upscale(frames: np.ndarray) -> np.ndarray:
        try:
            fut = state["batcher"].submit(frames)
        except Busy:
            raise _error(429, "too many requests queued; retry shortly") from None
        return await asyncio.wrap_future(fut)

    async def read_limited(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and int(length) > max_bytes:
            raise _error(413, f"request body over the {cfg.max_upload_mb:g} MB limit")
        body = await request.body()
        if len(body) > max_bytes:
            raise _error(413, f"request body over the {cfg.max_upload_mb:g} MB limit")
        return body

    def check_pixels(h: int, w: int) -> None:
        if h * w > cfg.max_pixels:
            raise _error(413, f"{w}x{h} is over the limit of {cfg.max_pixels} pixels per image")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "device": str(engine.upscaler.device), "precision": engine.upscaler.precision}

    @app.get("/v1/models", dependencies=[Depends(auth)])
    async def models() -> dict[str, Any]:
        keep = {k: v for k, v in meta.items() if k != "train_config"}
        return {"models": [keep | {"scale": engine.upscaler.scale}]}

    @app.post("/v1/predict", dependencies=[Depends(auth)])
    async def predict(request: Request) -> Response:
        """``{"instances": N x H x W x 3}`` of uint8 0-255 or floats 0-1 -> ``{"predictions": N x 4H x 4W x 3}``."""
        body = await read_limited(request)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _error(400, f"malformed JSON: {exc}") from None
        if not isinstance(payload, dict) or "instances" not in payload:
            raise _error(422, 'expected a JSON object {"instances": [...]}')
        try:
            arr = np.asarray(payload["instances"])
        except (ValueError, TypeError):
            raise _error(422, "instances must be a rectangular N x H x W x C array") from None
        if arr.dtype == object or arr.ndim != 4:
            raise _error(422, f"instances must be a 4-D array N x H x W x C, got {arr.ndim} dimensions")
        n, h, w, c = arr.shape
        if c != 3:
            raise _error(422, f"instances must have 3 channels (RGB), got {c}")
        if n == 0 or h == 0 or w == 0:
            raise _error(422, "instances must not be empty")
        if n > cfg.max_batch:
            raise _error(413, f"{n} instances is over the limit of {cfg.max_batch} per request")
        check_pixels(h, w)
        if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_):
            if arr.min() < 0 or arr.max() > 255:
                raise _error(422, "integer instances must be in 0-255")
            frames, kind = arr.astype(np.uint8), "uint8"
        elif np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
                raise _error(422, "float instances must be in 0-1")
            frames, kind = arr.astype(np.float32), "float"
        else:
            raise _error(422, f"unsupported element type {arr.dtype}")
        out = await upscale(frames)
        return JSONResponse({"predictions": out.tolist(), "dtype": kind,
                             "range": "0-255" if kind == "uint8" else "0-1", "shape": list(out.shape)})

    @app.post("/v1/images", dependencies=[Depends(auth)], response_class=Response,
              responses={200: {"content": {"image/png": {}}}})
    async def images(file: UploadFile = File(...)) -> Response:
        """An image file (PNG, JPEG, WebP, ...) in, its 4x PNG out."""
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _error(413, f"upload over the {cfg.max_upload_mb:g} MB limit")
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if img is None:
            raise _error(415, f"{file.filename}: not an image (PNG, JPEG, WebP, BMP, TIFF)")
        check_pixels(*img.shape[:2])
        out = await upscale(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)[None])
        ok, png = cv2.imencode(".png", cv2.cvtColor(out[0], cv2.COLOR_RGB2BGR))
        return Response(png.tobytes(), media_type="image/png")

    @app.post("/v1/jobs", status_code=202, dependencies=[Depends(auth)])
    async def create_job(file: UploadFile = File(...)) -> dict[str, Any]:
        """Upload a clip; it is upscaled in the background. Poll ``GET /v1/jobs/{id}``."""
        store: JobStore = state["store"]
        if store.count("queued") >= cfg.queue_length:
            raise _error(429, "the job queue is full; retry later")
        job_id = uuid.uuid4().hex
        folder = store.folder(job_id)
        folder.mkdir(parents=True)
        suffix = Path(file.filename or "clip.mp4").suffix.lower() or ".mp4"
        path = folder / f"input{suffix}"
        size = 0
        with open(path, "wb") as f:
            while chunk := await file.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    f.close()
                    shutil.rmtree(folder, ignore_errors=True)
                    raise _error(413, f"upload over the {cfg.max_upload_mb:g} MB limit")
                f.write(chunk)
        try:
            with VideoReader(path) as reader:
                total = reader.info.expected_frames
                check_pixels(reader.info.height, reader.info.width)
        except VsrError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise _error(415, f"{file.filename}: {str(exc).split(': ', 1)[-1]}") from None
        except HTTPException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        store.create(job_id, path.name, total)
        state["worker"].wake.set()
        return _job_view(store.get(job_id))

    def job_or_404(job_id: str) -> dict[str, Any]:
        job = state["store"].get(job_id)
        if job is None:
            raise _error(404, f"no job {job_id}")
        return job

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(auth)])
    async def job_status(job_id: str) -> dict[str, Any]:
        return _job_view(job_or_404(job_id))

    @app.get("/v1/jobs/{job_id}/result", dependencies=[Depends(auth)])
    async def job_result(job_id: str) -> FileResponse:
        job = job_or_404(job_id)
        if job["status"] != "done":
            raise _error(409, f"job {job_id} is {job['status']}, not done")
        path = state["store"].folder(job_id) / f"result{Path(job['filename']).suffix}"
        return FileResponse(path, filename=f"{job_id}_x4{path.suffix}")

    @app.delete("/v1/jobs/{job_id}", dependencies=[Depends(auth)])
    async def cancel_job(job_id: str) -> dict[str, Any]:
        job = job_or_404(job_id)
        store: JobStore = state["store"]
        if job["status"] == "queued":
            store.update(job_id, status="cancelled")
            shutil.rmtree(store.folder(job_id), ignore_errors=True)
        elif job["status"] == "running":
            state["worker"].cancel.add(job_id)
        return _job_view(store.get(job_id))

    return app

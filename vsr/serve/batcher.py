"""Dynamic batching: requests that arrive within a short window become one model call per frame shape.

One thread owns the queue. A request whose client went away (its future cancelled) is dropped before
the model runs; a failure is handed to the requests of that batch and the thread carries on. If the
thread ever stops, ``alive`` says so and ``/healthz`` reports the server unhealthy.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from vsr.inference import Upscaler

log = logging.getLogger("vsr.serve")


class Busy(Exception):
    """The batcher queue is full."""


class SerialUpscaler:
    """An ``Upscaler`` whose model calls never overlap: the batcher and the job worker share one model.

    Two threads calling the model at once would each start a full set of intra-op threads on the same
    cores, and a job's frames would share the machine with whatever requests happen to arrive; with
    one call at a time a job computes exactly what ``vsr upscale`` computes, at the same speed.
    """

    def __init__(self, upscaler: Upscaler, lock: threading.Lock | None = None) -> None:
        self.inner = upscaler
        self.lock = lock or threading.Lock()

    def __getattr__(self, name: str):  # device, scale, precision, auto_batch, ... as the wrapped one's
        return getattr(self.inner, name)

    def upscale(self, frames: np.ndarray, **kw) -> np.ndarray:
        with self.lock:
            return self.inner.upscale(frames, **kw)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            return self.inner.run(x)

    def upscale_stills(self, frames: np.ndarray) -> np.ndarray:
        with self.lock:
            return self.inner.upscale_stills(frames)

    def run_stills(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            return self.inner.run_stills(x)

    def upscale_stream(self, frames: np.ndarray, state: Any, **kw) -> tuple[np.ndarray, Any]:
        with self.lock:  # a job's temporal model: one frame of its stream; requests may run between frames
            return self.inner.upscale_stream(frames, state, **kw)

    def upscale_lanes(self, frames: np.ndarray, states: Sequence[Any], **kw) -> tuple[np.ndarray, list[Any]]:
        with self.lock:
            return self.inner.upscale_lanes(frames, states, **kw)


class Batcher:
    """Gathers requests that arrive within ``window_ms`` into one model call per frame shape and dtype."""

    def __init__(self, upscaler: Upscaler | SerialUpscaler, *, window_ms: float, max_frames: int,
                 queue_length: int) -> None:
        self.upscaler = upscaler
        self.window = window_ms / 1000.0
        self.max_frames = max_frames
        self.queue: queue.Queue = queue.Queue(maxsize=queue_length)
        self.calls = 0  # model calls made (for the load test's batching figure)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vsr-batcher", daemon=True)

    def __enter__(self) -> Batcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def submit(self, frames: np.ndarray) -> Future:
        """Queue (N, H, W, 3) frames (uint8 0-255 or float32 0-1); the future gets the 4x frames."""
        fut: Future = Future()
        try:
            self.queue.put_nowait((frames, fut))
        except queue.Full:
            raise Busy from None
        return fut

    def _run(self, frames: np.ndarray) -> np.ndarray:
        """Unrelated pictures in one call (``upscale_stills``: a temporal model sees each as a fresh stream)."""
        if frames.dtype == np.float32:
            x = torch.from_numpy(frames).to(self.upscaler.device).permute(0, 3, 1, 2)
            return self.upscaler.run_stills(x).permute(0, 2, 3, 1).cpu().numpy()
        return self.upscaler.upscale_stills(frames)

    def _gather(self, pending: list[tuple[np.ndarray, Future]]) -> None:
        """Add what arrives within the window (or until ``max_frames``) to ``pending``."""
        deadline = time.perf_counter() + self.window
        while sum(len(f) for f, _ in pending) < self.max_frames:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            try:
                pending.append(self.queue.get(timeout=left))
            except queue.Empty:
                return

    def step(self, group: list[tuple[np.ndarray, Future]]) -> None:
        """Run one group of same-shape requests; each live future gets its frames or the error."""
        live = [(f, fut) for f, fut in group if fut.set_running_or_notify_cancel()]  # drops cancelled ones
        if not live:
            return
        try:
            out = self._run(np.concatenate([f for f, _ in live]))
        except Exception as exc:  # handed to every waiting request
            for _, fut in live:
                fut.set_exception(exc)
            return
        self.calls += 1
        start = 0
        for frames, fut in live:
            fut.set_result(out[start : start + len(frames)])
            start += len(frames)

    def _loop(self) -> None:
        pending: list[tuple[np.ndarray, Future]] = []
        while not self._stop.is_set():
            if not pending:
                try:
                    pending.append(self.queue.get(timeout=0.1))
                except queue.Empty:
                    continue
            self._gather(pending)
            key = (pending[0][0].shape[1:], pending[0][0].dtype)
            group = [p for p in pending if (p[0].shape[1:], p[0].dtype) == key]
            pending = [p for p in pending if (p[0].shape[1:], p[0].dtype) != key]
            try:
                self.step(group)
            except Exception:  # a bug here must not take every later request down with it
                log.exception("batcher: a batch failed outside the model call")
        for _, fut in pending:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(RuntimeError("the server is stopping"))

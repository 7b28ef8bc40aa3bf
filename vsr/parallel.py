"""Shares the segments of videos (and the images of a folder) out over N worker processes, each with its engine.

The calling process plans every video and takes its work folder (``Engine.prepare_video``), hands the segments
still to make to the workers (one device each in turn: several encoders on a many-core GPU machine, or one
worker per GPU), and joins a video as soon as its last segment is in. Each worker records its own finished
segments, so an interrupted run resumes from them like a single-process one. Memory is bounded per worker.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vsr.config import UpscaleConfig
from vsr.errors import VsrError
from vsr.images import is_image_path
from vsr.pipeline import Engine, Progress, Result, VideoJob

_POLL_S = 0.2


@dataclass(frozen=True)
class ImageTask:
    src: Path
    dst: Path
    overwrite: bool


def run_task(engine: Engine, task: Any, progress: Progress | None = None) -> Any:
    """Make one task with a worker's engine: a segment (its ``SegmentRecord``) or an image (its ``Result``)."""
    if isinstance(task, ImageTask):
        out = engine.upscale_image(task.src, task.dst, overwrite=task.overwrite)
        if progress:
            progress(1)
        return out
    return engine.run_segment(task, progress=progress)


def _worker(cfg: UpscaleConfig, device: str, threads: int, tasks: Any, results: Any) -> None:
    """A worker process: build the engine once, then make what comes from ``tasks`` until ``None``."""
    import torch

    from vsr.pipeline import build_engine

    if threads:
        torch.set_num_threads(threads)
    try:
        engine, _, _ = build_engine(replace(cfg, device=device))
    except BaseException as exc:
        results.put(("failed", None, describe(exc)))
        return
    while (item := tasks.get()) is not None:
        key, task = item
        try:
            results.put(("done", key, run_task(engine, task, lambda n: results.put(("progress", key, n)))))
        except BaseException as exc:  # reported to the parent, which stops the run
            results.put(("failed", key, describe(exc)))
            return


def describe(exc: BaseException) -> tuple[bool, str]:
    """(is a VsrError, its message or the traceback): how a worker's failure reaches the parent."""
    if isinstance(exc, VsrError):
        return True, str(exc)
    return False, "".join(traceback.format_exception(exc)).strip()


def worker_devices(devices: list[str], jobs: int) -> list[str]:
    """The device of each of ``jobs`` workers: the devices in turn."""
    return [devices[i % len(devices)] for i in range(jobs)]


class Workers:
    """N worker processes fed from one queue; leaving the ``with`` stops them (a running segment is cut, and
    its temp file is removed by the next run)."""

    def __init__(self, cfg: UpscaleConfig, devices: list[str], jobs: int) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: no forked CUDA state or locked threads
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        cpu = all(d == "cpu" for d in devices)
        threads = max(1, (os.cpu_count() or 1) // jobs) if cpu else 0
        self.procs = [ctx.Process(target=_worker, args=(cfg, dev, threads, self.tasks, self.results),
                                  name=f"vsr-worker-{i}", daemon=True)
                      for i, dev in enumerate(worker_devices(devices, jobs))]

    def __enter__(self) -> Workers:
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()

    def submit(self, key: int, task: Any) -> None:
        self.tasks.put((key, task))

    def close(self) -> None:
        for _ in self.procs:
            self.tasks.put(None)

    def next(self) -> tuple[str, int | None, Any]:
        """The next message of a worker; a worker that died is an error."""
        while True:
            try:
                return self.results.get(timeout=_POLL_S)
            except queue.Empty:
                dead = [p for p in self.procs if p.exitcode not in (None, 0)]
                if dead:
                    raise VsrError(f"a worker process died (exit code {dead[0].exitcode}); rerun the same command "
                                   "to resume from the finished segments")


def run_parallel(engine: Engine, workers: Callable[[int], Any], items: list[tuple[Path, Path]], *,
                 overwrite: bool = False, resume: bool = False, restart: bool = False,
                 progress: Progress | None = None,
                 on_start: Callable[[Any, int], None] | None = None) -> list[Result]:
    """Upscale ``items`` (input, output) on workers; ``engine`` (the same model and settings) plans and joins.

    ``workers(n)`` makes the pool for ``n`` tasks: a context manager with ``submit(key, task)``, ``close()`` (no
    more tasks) and ``next()`` -> ("progress", key, frames) | ("done", key, result) | ("failed", key, (is a
    VsrError, message)): ``Workers`` here (processes), ``vsr.cluster.RayWorkers`` (a Ray cluster). Results come in
    the order of ``items``."""
    videos: dict[int, VideoJob] = {}
    results: dict[int, Result] = {}
    tasks: dict[int, tuple[int, Any]] = {}  # task key -> (item, task)
    for i, (src, dst) in enumerate(items):
        if is_image_path(src):
            tasks[len(tasks)] = (i, ImageTask(src, dst, overwrite))
            continue
        job = engine.prepare_video(src, dst, overwrite=overwrite, resume=resume, restart=restart)
        videos[i] = job
        if on_start and len(items) == 1:
            on_start(job.info, job.frames_done)
        elif progress and job.frames_done:
            progress(job.frames_done)
        for seg in job.pending:
            tasks[len(tasks)] = (i, job.task(seg))
    left = {i for i in videos if videos[i].pending}
    for i in set(videos) - left:  # everything was done by an earlier run: only the join is left
        results[i] = engine.finish_video(videos[i], progress=progress)
    if not tasks:
        return [results[i] for i in sorted(results)]
    try:
        with workers(len(tasks)) as pool:
            for key, (_, task) in tasks.items():
                pool.submit(key, task)
            pool.close()
            waiting = set(tasks)
            while waiting:
                kind, key, payload = pool.next()
                if kind == "progress":
                    if progress:
                        progress(payload)
                    continue
                if kind == "failed":
                    is_user_error, message = payload
                    raise VsrError(message) if is_user_error else RuntimeError(f"a worker failed:\n{message}")
                waiting.discard(key)
                i, task = tasks[key]
                if isinstance(task, ImageTask):
                    results[i] = payload
                    continue
                job = videos[i]
                job.records[task.segment.index] = payload
                if not job.pending:
                    engine.current = job
                    results[i] = engine.finish_video(job, progress=progress)
    except BaseException as exc:
        engine.keep_after_failure(videos.values(), exc)
        raise
    return [results[i] for i in sorted(results)]


def upscale_shared(engine: Engine, cfg: UpscaleConfig, src: Path, dst: Path, *, devices: list[str], jobs: int,
                   ray: str | None = None, overwrite: bool = False, resume: bool = False, restart: bool = False,
                   progress: Progress | None = None,
                   on_start: Callable[[Any, int], None] | None = None) -> list[Result]:
    """``vsr upscale`` of a video or a folder with workers: ``jobs`` processes (``devices`` in turn), or actors on
    the Ray cluster at ``ray`` (``vsr.cluster``). With ``resume``, a folder's outputs that exist are kept."""
    if src.is_dir():
        engine.folder = True
        items, kept = engine.folder_files(src, dst, overwrite=overwrite, resume=resume)
    else:
        items, kept = [(src, dst)], []
    if ray:  # every node must find the files at the same paths
        items = [(a.resolve(), b.resolve()) for a, b in items]

    def workers(n: int) -> Any:
        if ray:
            from vsr.cluster import RayWorkers

            return RayWorkers(cfg, ray, min(jobs, n) if jobs > 1 else 0)
        return Workers(cfg, devices, min(jobs, n))

    results = run_parallel(engine, workers, items, overwrite=overwrite, resume=resume and not src.is_dir(),
                           restart=restart, progress=progress, on_start=on_start)
    if kept and results:
        results[0].notes.append(f"--resume: kept {len(kept)} output(s) an earlier run finished")
    return results


__all__ = ["ImageTask", "Workers", "describe", "run_parallel", "run_task", "upscale_shared", "worker_devices"]

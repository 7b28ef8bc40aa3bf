"""Runs the segments of videos and the images of a folder on a Ray cluster (the optional ``ray`` extra).

One actor per worker (a GPU each where the cluster has GPUs) loads the model once and makes the segments it is
given; inputs, outputs and work folders must be on a filesystem every node sees at the same paths. Ray restarts
an actor whose node was lost and retries its task elsewhere; past that, the work folder's manifest lets a rerun
of the same command make only what is missing. Ray's own tools start the cluster (``ray start --head`` on one
machine, ``ray start --address=HEAD:6379`` on the others); vsr only connects to it.
"""
from __future__ import annotations

import collections
import shutil
import tempfile
from dataclasses import replace
from typing import Any

from vsr.config import UpscaleConfig
from vsr.errors import VsrError
from vsr.workdir import SegmentRecord

_WAIT_S = 0.5


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise VsrError("--ray needs Ray: pip install 'vsr[ray]' (or pip install -e \".[ray]\" in a checkout)") from None
    return ray


class _Actor:
    """A worker on a node: the engine is built once, then segments and images are made one at a time."""

    def __init__(self, cfg: UpscaleConfig) -> None:
        from vsr.pipeline import build_engine

        self.engine, _, _ = build_engine(cfg)

    def run(self, task: Any) -> Any:
        from vsr.parallel import run_task

        return run_task(self.engine, task)


class RayWorkers:
    """The pool of ``vsr.parallel.run_parallel`` on Ray: ``jobs`` actors, fed one task each at a time."""

    def __init__(self, cfg: UpscaleConfig, address: str, jobs: int, *, num_cpus: int | None = None) -> None:
        self.ray = _ray()
        self.cfg, self.address, self.jobs, self.num_cpus = cfg, address, jobs, num_cpus
        self.queue: collections.deque[tuple[int, Any]] = collections.deque()
        self.inflight: dict[Any, tuple[int, Any]] = {}
        self.idle: list[Any] = []
        self.messages: collections.deque[tuple[str, int | None, Any]] = collections.deque()
        self.started_ray = False
        self.temp_dir: str | None = None

    def __enter__(self) -> RayWorkers:
        ray = self.ray
        if not ray.is_initialized():
            try:
                if self.address == "local":  # a Ray instance of this machine, for this run only: its session
                    self.temp_dir = tempfile.mkdtemp(prefix="vsr-ray-")  # files go with it (a short path: sockets)
                    ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                             _temp_dir=self.temp_dir)
                else:
                    ray.init(address=self.address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise VsrError(f"--ray {self.address}: cannot reach a Ray cluster ({str(exc).splitlines()[0]}); "
                               "start one with `ray start --head`, or use --ray local") from None
            self.started_ray = True
        gpus = int(ray.cluster_resources().get("GPU", 0))
        device = self.cfg.device
        if gpus and not device.startswith("cpu"):
            options, device = {"num_gpus": 1}, "cuda"  # Ray gives each actor its own GPU, seen as cuda:0
        else:
            options, device = {"num_cpus": 1}, "cpu"
        actor = ray.remote(max_restarts=2, max_task_retries=2, **options)(_Actor)
        n = self.jobs or gpus or 1
        self.idle = [actor.remote(replace(self.cfg, device=device)) for _ in range(n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for a in [*self.idle, *(actor for _, actor in self.inflight.values())]:
            self.ray.kill(a)
        if self.started_ray:
            self.ray.shutdown()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def submit(self, key: int, task: Any) -> None:
        self.queue.append((key, task))

    def close(self) -> None:
        pass

    def _dispatch(self) -> None:
        while self.queue and self.idle:
            key, task = self.queue.popleft()
            actor = self.idle.pop()
            self.inflight[actor.run.remote(task)] = (key, actor)

    def next(self) -> tuple[str, int | None, Any]:
        """The next finished task, as ("progress", ...) then ("done", ...), or ("failed", ...)."""
        from vsr.parallel import describe

        ray = self.ray
        while not self.messages:
            self._dispatch()
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=_WAIT_S)
            for ref in ready:
                key, actor = self.inflight.pop(ref)
                self.idle.append(actor)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.as_instanceof_cause()
                    self.messages.append(("failed", key, describe(cause if isinstance(cause, VsrError) else exc)))
                    continue
                except ray.exceptions.RayActorError as exc:
                    self.messages.append(("failed", key, (True, "a Ray worker was lost for good "
                                                         f"({str(exc).splitlines()[0]}); rerun to resume")))
                    continue
                self.messages.append(("progress", key, out.frames if isinstance(out, SegmentRecord) else 1))
                self.messages.append(("done", key, out))
        return self.messages.popleft()


__all__ = ["RayWorkers"]

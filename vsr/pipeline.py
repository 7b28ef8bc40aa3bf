"""The streaming upscale engine: decode -> batch -> infer -> encode, with bounded queues (back-pressure).

A decoder thread reads the input, the calling thread runs the model on batches of frames, and an
encoder thread encodes. Decoding and encoding overlap inference; the queues are bounded so memory
stays flat for any clip length. A video is made segment by segment (``vsr.segments``: each segment's
packets into a file of the work folder, ``vsr.workdir``), so that a rerun resumes and workers can share
it (``vsr.parallel``), then joined with the input's audio and subtitles into a temporary file beside the
target, renamed only when everything succeeded.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vsr import images, interrupt
from vsr import weights as weights_io
from vsr.atomic import atomic_output, remove_stale_temps
from vsr.colour import Yuv420
from vsr.config import UpscaleConfig
from vsr.device import resolve_device, resolve_precision
from vsr.errors import InputError, OutputError, VsrError
from vsr.images import is_image_path
from vsr.inference import Upscaler
from vsr.segments import SEGMENT_SECONDS, Segment, SegmentWriter, interleave, joined_video, plan_segments
from vsr.video import (ContainerCaps, EncodeSettings, Frame, OutputPlan, VideoInfo, VideoReader, VideoWriter,
                       is_video_path, plan_output)
from vsr.weights import LoadedWeights
from vsr.workdir import Manifest, SegmentRecord, WorkDir, input_identity

_DONE = object()
Progress = Callable[[int], None]


@dataclass
class Result:
    """What one upscale did: the figures of the closing summary line."""

    input: Path
    output: Path
    frames_in: int = 0
    frames_out: int = 0
    seconds: float = 0.0
    in_size: tuple[int, int] = (0, 0)
    out_size: tuple[int, int] = (0, 0)
    batch_size: int = 0  # frames per model batch (videos)
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_out / self.seconds if self.seconds else 0.0


class _Failure:
    """An exception raised in a worker thread, passed through the queue to the main thread."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def check_output(src: Path, dst: Path, *, overwrite: bool) -> None:
    """Refuse outputs that would clobber the input or an existing file, or that cannot be written."""
    if dst.exists() and src.exists() and os.path.samefile(src, dst) or dst.resolve() == src.resolve():
        raise OutputError(f"{dst}: the output is the input file; choose another output path")
    if dst.is_dir():
        raise OutputError(f"{dst}: is a folder; give a file name for the output")
    if dst.exists() and not overwrite:
        raise OutputError(f"{dst}: already exists (use --overwrite to replace it)")
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{dst}: the folder {parent} does not exist")
    try:  # a real write, not os.access: root passes access checks on read-only mounts
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".vsr-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"{dst}: the folder {parent} is not writable ({exc.strerror})") from exc


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Blocking put that gives up when ``stop`` is set; returns False if it gave up."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _DONE


def _decode_worker(reader: VideoReader, out: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in reader:
            if not _put(out, item, stop):
                return
        _put(out, _DONE, stop)
    except BaseException as exc:  # handed to the main thread, which re-raises it
        _put(out, _Failure(exc), stop)


def _encode_worker(writer: VideoWriter, inq: queue.Queue, stop: threading.Event, errors: list[BaseException],
                   progress: Progress | None) -> None:
    try:
        while True:
            item = _get(inq, stop)
            if item is _DONE:
                return
            if isinstance(item, Frame):
                writer.write_frame(item)
                if progress:
                    progress(1)
            else:
                writer.write_packet(item)
    except BaseException as exc:  # handed to the main thread, which re-raises it
        errors.append(exc)
        stop.set()


class _Pump:
    """A decoder thread feeding the caller and an encoder thread fed by it, through bounded queues.

    The caller takes decoded items from ``items()`` and hands upscaled frames and copied packets to
    ``send()``; a failure in either thread is raised in the caller. Leaving the ``with`` stops and joins both,
    even when a signal (Ctrl-C, SIGTERM) arrives meanwhile: the reader and writer the threads use must not be
    closed under them. Register the exit before entering (``ExitStack.push``), so that a signal during the
    start still joins what started.
    """

    def __init__(self, reader: VideoReader, writer: VideoWriter, *, depth: int, progress: Progress | None) -> None:
        self.stop = threading.Event()
        self.decoded: queue.Queue = queue.Queue(maxsize=depth)
        self.encoded: queue.Queue = queue.Queue(maxsize=depth)
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=_decode_worker, args=(reader, self.decoded, self.stop), name="vsr-decode", daemon=True),
            threading.Thread(target=_encode_worker, args=(writer, self.encoded, self.stop, self.errors, progress),
                             name="vsr-encode", daemon=True),
        ]

    def __enter__(self) -> _Pump:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        deadline = time.monotonic() + 10
        stopped: BaseException | None = None
        for t in self.threads:
            while t.ident is not None and t.is_alive() and time.monotonic() < deadline:
                try:
                    t.join(timeout=max(0.0, deadline - time.monotonic()))
                except KeyboardInterrupt as exc:  # a signal while joining: join first, raise it after
                    stopped = exc
        if stopped is not None:
            raise stopped

    def items(self) -> Iterator[Any]:
        """Decoded frames and copy-stream packets, in demux order, until the input ends."""
        while True:
            item = _get(self.decoded, self.stop)
            if isinstance(item, _Failure):
                raise item.exc
            if item is _DONE:
                return
            yield item

    def send(self, item: Any) -> None:
        """Queue a frame or packet for the encoder thread."""
        if not _put(self.encoded, item, self.stop):
            self._raise()

    def drain(self) -> None:
        """Wait until the encoder thread has written everything sent."""
        _put(self.encoded, _DONE, self.stop)
        self.threads[1].join()
        self._raise()

    def _raise(self) -> None:
        if self.errors:
            raise self.errors[0]
        if self.stop.is_set():
            raise VsrError("upscaling stopped before the end")


@dataclass(frozen=True)
class SegmentTask:
    """One segment to make: everything a worker (another process, another machine) needs besides its engine."""

    src: Path
    dst: Path
    plan: OutputPlan
    segment: Segment


@dataclass
class VideoJob:
    """A video being upscaled in segments: its plan, work folder, and the segments finished so far."""

    src: Path
    dst: Path
    info: VideoInfo
    plan: OutputPlan
    work: WorkDir
    segments: list[Segment]
    result: Result
    started: float
    records: dict[int, SegmentRecord] = field(default_factory=dict)
    kept: str = ""  # after a failure: what of the work folder is kept, in words

    @property
    def pending(self) -> list[Segment]:
        return [s for s in self.segments if s.index not in self.records]

    @property
    def frames_done(self) -> int:
        return sum(r.frames for r in self.records.values())

    def task(self, segment: Segment) -> SegmentTask:
        return SegmentTask(self.src, self.dst, self.plan, segment)


class _ModelStream:
    """Frames through the engine's model, batch after batch in order: a single-frame model takes each batch in
    one call; a temporal one takes its frames one at a time, its state carried across the batches."""

    def __init__(self, engine: Engine, yuv: Yuv420 | None) -> None:
        self.upscaler, self.yuv, self.temporal = engine.upscaler, yuv, engine.temporal
        self.state: Any = None

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        if not self.temporal:
            return list(self.upscaler.upscale(np.stack(images), yuv=self.yuv))
        out = []
        for image in images:
            up, self.state = self.upscaler.upscale_stream(image[None], self.state, yuv=self.yuv)
            out.append(up[0])
        return out

    def frames(self, batch: list[Frame]) -> list[Frame]:
        """The batch's frames upscaled, timing unchanged (as YUV planes where the stream makes them)."""
        images = self(list(f.image for f in batch))
        return [_upscaled(f, up, self.yuv) for f, up in zip(batch, images)]


def _upscaled(frame: Frame, image: np.ndarray, yuv: Yuv420 | None) -> Frame:
    """``frame`` with its picture replaced by the upscaled ``image`` (YUV planes where ``yuv``), timing unchanged."""
    return replace(frame, image=image, pix_fmt="yuv420p" if yuv else frame.pix_fmt)


class _Lane:
    """A segment in a side-by-side run of a temporal model: its run, its frames still to come, its state."""

    def __init__(self, run: _SegmentRun) -> None:
        self.run, self.frames, self.state = run, run.items(), None

    def next_frame(self) -> Frame | None:
        return next(self.frames, None)


class _SegmentRun:
    """One segment being made: its input read from the warm-up frames on (a decoder thread), its packet file
    written by an encoder thread; the caller takes ``items()``, hands the upscaled frames to ``keep`` (the
    warm-up frames' pictures are dropped there) and ends with ``finish`` (checked, recorded as done)."""

    def __init__(self, engine: Engine, task: SegmentTask, progress: Progress | None, *, depth: int | None = None) -> None:
        self.task, self.seg = task, task.segment
        self.depth = depth  # frames each queue holds (default: two batches and two)
        self.warm = self.seg.warmup if engine.temporal else 0  # frames the model sees first, not kept
        self.yuv = engine.output_target(task.plan)
        self.progress = progress
        self.engine = engine
        self.decoded = 0

    def __enter__(self) -> _SegmentRun:
        seg, task = self.seg, self.task
        self.work = WorkDir(task.dst)
        self.stack = contextlib.ExitStack()
        try:
            self.reader = self.stack.enter_context(
                VideoReader(task.src, skip_corrupt=self.engine.skip_corrupt, video_only=True))
            frames = self.reader.frames_between(seg.warm_start if self.warm else seg.start, seg.end,
                                                first_index=seg.first_frame - self.warm)
            self.batch_size = self.engine.batch_for(self.reader.info.height, self.reader.info.width)
            depth = self.engine.queue_frames or self.depth or 2 * self.batch_size + 2
            self.writer = self.stack.enter_context(SegmentWriter(self.work.segment_path(seg.index), task.plan))
            self.pump = _Pump(frames, self.writer, depth=depth, progress=self.progress)
            self.stack.push(self.pump)  # before the threads start: a signal from here on still joins them
            self.pump.__enter__()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def items(self) -> Iterator[Frame]:
        """The segment's frames in order, its warm-up frames first."""
        for item in self.pump.items():
            interrupt.check()
            self.decoded += item.index >= self.seg.first_frame
            yield item

    def keep(self, frames: Iterable[Frame]) -> None:
        """Queue upscaled frames for the encoder; those of the warm-up are not kept."""
        for frame in frames:
            if frame.index >= self.seg.first_frame:
                self.pump.send(frame)

    def finish(self) -> SegmentRecord:
        """Wait for the encoder, check every decoded frame was written, and record the segment as done."""
        seg = self.seg
        self.pump.drain()
        self.writer.finish()
        if self.writer.frames_written != self.decoded:
            raise VsrError(f"{self.task.src}: segment {seg.index}: decoded {self.decoded} frames but wrote "
                           f"{self.writer.frames_written}")
        notes = tuple(self.writer.notes)
        self.stack.close()
        record = SegmentRecord(index=seg.index, frames=self.decoded, info=self.writer.info, notes=notes,
                               corrupt_packets=self.reader.corrupt_packets, concealed_frames=self.reader.concealed_frames)
        self.work.commit(record)
        return record


def _serialised(progress: Progress | None) -> Progress | None:
    """``progress`` called under a lock, for threads that report at once."""
    if progress is None:
        return None
    lock = threading.Lock()

    def report(n: int) -> None:
        with lock:
            progress(n)

    return report


WARMUP_FRAMES = 5  # frames a temporal model sees before a segment (after the first) to build up its state
LANE_QUEUE = 4  # frames each queue of a side-by-side segment holds (it takes one frame a step)


class Engine:
    """Upscales videos, images and folders with one ``Upscaler``."""

    def __init__(self, upscaler: Upscaler, *, batch_size: int = 0, settings: EncodeSettings | None = None,
                 skip_corrupt: bool = False, queue_frames: int | None = None, device_colour: bool | None = None,
                 segment_seconds: float = SEGMENT_SECONDS, model_name: str | None = None) -> None:
        if batch_size < 0:
            raise VsrError(f"--batch-size must be at least 1 (or 0 = automatic), got {batch_size}")
        self.upscaler = upscaler
        # Convert the 4x pictures to the encoder's YUV 4:2:0 on the model's device (None: on GPUs only;
        # on a CPU the model is the slow stage and swscale, in the encoder thread, the cheaper converter).
        self.device_colour = upscaler.device.type == "cuda" if device_colour is None else device_colour
        self.batch_size = batch_size  # 0 = automatic, from the frame size (Upscaler.auto_batch)
        self.settings = settings or EncodeSettings()
        self.skip_corrupt = skip_corrupt
        self.queue_frames = queue_frames
        self.notes: list[str] = []  # said once about the set-up (e.g. a precision the model does not support)
        self.segment_seconds = segment_seconds  # input seconds per segment of a video (0: one segment)
        self.warmup_frames = WARMUP_FRAMES  # for a temporal model (``Segment.warmup``)
        self.model_name = model_name
        self._model_sha: str | None = None
        self.current: VideoJob | None = None  # the video being upscaled (what an interruption leaves to resume)
        self.folder = False  # upscaling a folder (a rerun needs --resume to keep the files already done)

    def like(self, upscaler: Upscaler | None = None, *, settings: EncodeSettings | None = None) -> Engine:
        """An engine with this one's configuration, on another upscaler (e.g. one that serialises calls) and/or
        with other encode settings."""
        e = Engine(upscaler or self.upscaler, batch_size=self.batch_size, settings=settings or self.settings,
                   skip_corrupt=self.skip_corrupt, queue_frames=self.queue_frames, device_colour=self.device_colour,
                   segment_seconds=self.segment_seconds, model_name=self.model_name)
        e.warmup_frames = self.warmup_frames
        return e

    def batch_for(self, height: int, width: int) -> int:
        """Frames per model batch for frames of this size."""
        return self.batch_size or self.upscaler.auto_batch(height, width)

    def output_target(self, plan: OutputPlan) -> Yuv420 | None:
        """The YUV 4:2:0 target the pictures are converted to on the device, or None (RGB to the encoder):
        the plan's, where this engine converts on the device."""
        return plan.yuv420 if self.device_colour else None

    @property
    def temporal(self) -> bool:
        """The model carries a state from frame to frame (``Upscaler.upscale_stream``)."""
        return self.upscaler.descriptor.temporal

    def upscale_frames(self, frames: Iterable[np.ndarray], *, yuv: Yuv420 | None = None) -> Iterator[np.ndarray]:
        """Upscale a sequence of (H, W, 3) frames in order: in batches (frames of another size start a new batch),
        or, for a temporal model, one at a time with its state carried from a fresh start; with ``yuv``, each comes
        back as YUV 4:2:0 planes (``Upscaler.upscale``)."""
        stream = _ModelStream(self, yuv)
        batch: list[np.ndarray] = []
        for frame in frames:
            interrupt.check()
            if batch and (len(batch) >= self.batch_for(*batch[0].shape[:2]) or frame.shape != batch[0].shape
                          or frame.dtype != batch[0].dtype):
                yield from stream(batch)
                batch = []
            batch.append(frame)
        if batch:
            yield from stream(batch)

    def upscale_video(self, src: str | Path, dst: str | Path, *, overwrite: bool = False,
                      progress: Progress | None = None, on_start: Callable[[Any, int], None] | None = None,
                      resume: bool = False, restart: bool = False) -> Result:
        """Upscale a video file to ``dst``; audio and subtitles are copied, timing and colour kept.

        The video is encoded in segments kept in a work folder beside ``dst`` (``vsr.workdir``) and joined at
        the end: a rerun after an interruption continues from the first unfinished segment (``resume``: there
        must be one to continue; ``restart``: discard it). ``on_start(info, frames_done)`` is called once the
        input is open (``frames_done``: frames of segments an earlier run finished)."""
        job = self.prepare_video(src, dst, overwrite=overwrite, resume=resume, restart=restart)
        self.current = job
        try:
            if on_start:
                on_start(job.info, job.frames_done)
            lanes = self.batch_for(job.info.height, job.info.width) if self.temporal else 1
            for seg, record in self.run_segments([job.task(s) for s in job.pending], progress, lanes=lanes):
                job.records[seg.index] = record
            return self.finish_video(job, progress=progress)
        except BaseException as exc:  # Ctrl-C and SIGTERM too: ``interrupted`` then says what is kept
            self.keep_after_failure([job], exc)
            raise

    def keep_after_failure(self, jobs: Iterable[VideoJob], exc: BaseException) -> None:
        """After a failure: each unfinished job's work folder stays if some segment of it is finished (``kept``
        says so in words), else it goes; the first one kept becomes ``current`` and a ``VsrError`` names it."""
        kept = []
        for job in jobs:
            if not job.work.exists():  # joined already, or never taken
                continue
            done = [s for s in job.segments if job.work.finished(s, verify=False)]
            if not done:
                job.work.remove()
                continue
            job.work.release()
            job.kept = (f"{len(done)} of {len(job.segments)} segments of {job.dst.name} are done and kept in "
                        f"{job.work.path}; a rerun resumes")
            kept.append(job)
        if kept:
            self.current = kept[0]
            if isinstance(exc, VsrError) and exc.args:
                exc.args = (f"{exc.args[0]} ({kept[0].kept})", *exc.args[1:])

    def identity(self, plan: OutputPlan) -> dict[str, Any]:
        """Every setting that shapes the output of a video (a resumed run must have the same)."""
        up = self.upscaler
        return {"scale": up.scale, "precision": up.precision, "tile": up.tile, "tile_overlap": up.tile_overlap,
                "colour_on_device": bool(self.output_target(plan)), "format": plan.format_name,
                "encoder": plan.encoder, "options": dict(plan.options), "pix_fmt": plan.pix_fmt,
                "time_base": str(plan.time_base), "skip_corrupt": self.skip_corrupt,
                "segment_seconds": self.segment_seconds, "warmup": self.warmup_frames if self.temporal else 0}

    def model_identity(self) -> dict[str, Any]:
        """The model's name and the SHA-256 of its tensors (what the work folder of a run records)."""
        if self._model_sha is None:
            h = hashlib.sha256()
            for name, t in sorted(self.upscaler.model.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            self._model_sha = h.hexdigest()
        return {"name": self.model_name or self.upscaler.descriptor.arch, "sha256": self._model_sha}

    def prepare_video(self, src: str | Path, dst: str | Path, *, overwrite: bool = False, resume: bool = False,
                      restart: bool = False) -> VideoJob:
        """Open the input, plan the output and its segments, and take the work folder (what an earlier run of
        the same job finished is kept, verified); nothing is decoded beyond the first frame."""
        src, dst = Path(src), Path(dst)
        check_output(src, dst, overwrite=overwrite)
        started = time.perf_counter()
        stale = remove_stale_temps(dst)
        with VideoReader(src, skip_corrupt=self.skip_corrupt) as reader:
            info = reader.info
            plan = plan_output(info, ContainerCaps.for_path(dst), scale=self.upscaler.scale, settings=self.settings)
            times = reader.presentation_times() if self.segment_seconds > 0 else None
        segments = plan_segments(times, info.fps, self.segment_seconds,
                                 warmup=self.warmup_frames if self.temporal else 0)
        batch_size = self.batch_for(info.height, info.width)
        manifest = Manifest(input=input_identity(src), settings=self.identity(plan), model=self.model_identity(),
                            segments=segments, run={"device": str(self.upscaler.device), "batch_size": batch_size})
        work = WorkDir(dst)
        result = Result(input=src, output=dst, in_size=(info.width, info.height), out_size=(plan.width, plan.height),
                        batch_size=batch_size, notes=list(plan.notes))
        result.notes.extend(work.open(manifest, resume=resume, restart=restart))
        if stale:
            result.notes.append(f"removed {len(stale)} temporary file(s) that a killed run left beside {dst.name}: "
                                + ", ".join(p.name for p in stale))
        job = VideoJob(src=src, dst=dst, info=info, plan=plan, work=work, segments=segments, result=result,
                       started=started)
        for seg in segments:
            had = work.record_path(seg.index).exists()
            if (record := work.finished(seg)) is not None:
                job.records[seg.index] = record
            elif had:
                result.notes.append(f"segment {seg.index} of the earlier run was damaged: made again")
        if job.records:
            result.notes.append(f"resumed: {len(job.records)} of {len(segments)} segments "
                                f"({job.frames_done} frames) were done by an earlier run")
        return job

    def run_segment(self, task: SegmentTask, progress: Progress | None = None) -> SegmentRecord:
        """Decode, upscale and encode one segment into its packet file, then record it as finished (a temporal
        model's segment goes through the lane loop of ``run_segments``, as one lane)."""
        if self.temporal:
            return next(self.run_segments([task], progress))[1]
        with _SegmentRun(self, task, progress) as run:
            stream = _ModelStream(self, run.yuv)
            batch: list[Frame] = []
            for item in run.items():
                batch.append(item)
                if len(batch) >= run.batch_size:
                    run.keep(stream.frames(batch))
                    batch = []
            if batch:
                run.keep(stream.frames(batch))
            return run.finish()

    def run_segments(self, tasks: Sequence[SegmentTask], progress: Progress | None = None, *, lanes: int = 1
                     ) -> Iterator[tuple[Segment, SegmentRecord]]:
        """Make these segments, yielding each one's record as it is finished: one after another, or, for a
        temporal model with ``lanes`` > 1, up to ``lanes`` segments side by side in lockstep, frame t of each in
        one model call (``Upscaler.upscale_lanes``: a GPU batch where one stream has only one frame at a time).
        A segment that ends makes room for the next; every segment's pictures are those it gets alone (to the
        rounding of a batched call), from its own warm-up frames. (One lane: the segments one after another, each
        a single stream.)"""
        if not self.temporal:
            for task in tasks:
                yield task.segment, self.run_segment(task, progress)
            return
        todo = deque(tasks)
        report = _serialised(progress)  # several encoder threads report at once
        with contextlib.ExitStack() as stack:
            live: list[_Lane] = []
            while todo or live:
                while todo and len(live) < lanes:
                    live.append(_Lane(stack.enter_context(_SegmentRun(self, todo.popleft(), report, depth=LANE_QUEUE))))
                step: dict[Any, list[tuple[_Lane, Frame]]] = {}
                for lane in list(live):
                    if (frame := lane.next_frame()) is None:
                        live.remove(lane)
                        yield lane.run.seg, lane.run.finish()
                    else:  # frames of one size, depth and colour target go in one call
                        step.setdefault((frame.image.shape, frame.image.dtype.str, lane.run.yuv), []).append((lane, frame))
                for members in step.values():
                    yuv = members[0][0].run.yuv
                    images, states = self.upscaler.upscale_lanes(np.stack([f.image for _, f in members]),
                                                                 [lane.state for lane, _ in members], yuv=yuv)
                    for (lane, frame), image, state in zip(members, images, states):
                        lane.state = state
                        lane.run.keep([_upscaled(frame, image, yuv)])

    def finish_video(self, job: VideoJob, *, progress: Progress | None = None) -> Result:
        """Check every segment once more (a damaged one is made again), join them with the input's audio and
        subtitles into the target (atomically), and remove the work folder."""
        for seg in job.segments:
            if job.work.finished(seg) is None:
                job.result.notes.append(f"segment {seg.index} was damaged before the join: made again")
                job.records[seg.index] = self.run_segment(job.task(seg), progress)
        result, plan = job.result, job.plan
        records = [job.records[s.index] for s in job.segments]
        with VideoReader(job.src, skip_corrupt=self.skip_corrupt) as reader, atomic_output(job.dst) as tmp, \
                VideoWriter(tmp, plan, reader.sources, name=job.dst, encoded=True) as writer:
            header = writer.start().hex()
            for r in records:
                if r.info.extradata != header:
                    raise OutputError(f"{job.dst}: segment {r.index} was encoded with another {plan.encoder} header "
                                      "than this FFmpeg makes now; rerun with --restart")
            video = joined_video([job.work.segment_path(s.index) for s in job.segments])
            for is_video, packet in interleave(video, reader.copy_packets()):
                if is_video:
                    writer.write_encoded(packet)
                else:
                    writer.write_packet(packet)
            writer.finish()
            if writer.packets_written != sum(r.info.packets for r in records):
                raise VsrError(f"{job.dst}: joined {writer.packets_written} video packets of "
                               f"{sum(r.info.packets for r in records)}")
        job.work.remove()
        result.frames_in = result.frames_out = sum(r.frames for r in records)
        for r in records:
            result.notes.extend(r.notes)
        self._check_counts(job, records)
        result.seconds = time.perf_counter() - job.started
        return result

    @staticmethod
    def _check_counts(job: VideoJob, records: list[SegmentRecord]) -> None:
        """A note where packets were skipped or frames concealed, or the container announced other counts."""
        info, result = job.info, job.result
        corrupt, concealed = sum(r.corrupt_packets for r in records), sum(r.concealed_frames for r in records)
        if corrupt:
            result.notes.append(f"{corrupt} corrupt packet(s) skipped (--skip-corrupt)")
        if concealed:
            result.notes.append(f"{concealed} damaged frame(s) kept as the decoder concealed them (--skip-corrupt)")
        expected = info.expected_frames
        if expected and (expected != result.frames_in if info.frames else result.frames_in < expected - 1):
            result.notes.append(f"the container announced {'' if info.frames else 'about '}{expected} frames but "
                                f"{result.frames_in} were decoded (truncated file?)")

    def upscale_image(self, src: str | Path, dst: str | Path, *, overwrite: bool = False) -> Result:
        """Upscale one image; greyscale stays greyscale, alpha is resized bicubically, 16-bit stays 16-bit,
        EXIF orientation is applied (the output is upright and carries none)."""
        src, dst = Path(src), Path(dst)
        if not src.is_file():
            raise InputError(f"{src}: no such file")
        check_output(src, dst, overwrite=overwrite)
        started = time.perf_counter()
        img = images.read_image(src)
        images.check_writable(dst, sixteen_bit=img.rgb.dtype == np.uint16, alpha=img.alpha is not None)
        up = self.upscaler.upscale_stills(img.rgb[None])[0]  # a temporal model: a stream of one frame
        (w, h), s = img.size, self.upscaler.scale
        alpha = None if img.alpha is None else cv2.resize(img.alpha, (w * s, h * s), interpolation=cv2.INTER_CUBIC)
        images.write_image(dst, up, alpha=alpha, grey=img.grey)
        return Result(input=src, output=dst, frames_in=1, frames_out=1, seconds=time.perf_counter() - started,
                      in_size=(w, h), out_size=(w * s, h * s))

    def interrupted(self) -> str:
        """What an interruption of the current video left, and how to go on (for the CLI's last line); the work
        folder of a video with nothing finished yet is removed."""
        job = self.current
        again = " with --resume" if self.folder else " again"
        kept = job.kept if job is not None else ""
        if kept:
            return kept.replace("a rerun resumes", f"run the same command{again} to resume (--restart starts over)")
        return f"the finished files are kept; run the same command{again} to do the rest" if self.folder \
            else "nothing was written"

    def folder_files(self, src: str | Path, dst: str | Path, *, overwrite: bool = False,
                     resume: bool = False) -> tuple[list[tuple[Path, Path]], list[Path]]:
        """The (input, output) pairs of a folder job, and the outputs already there that ``resume`` keeps (those
        an interrupted run finished; each output is written atomically, so one that exists is whole)."""
        src, dst = Path(src), Path(dst)
        files = [p for p in sorted(src.iterdir()) if p.is_file() and (is_image_path(p) or is_video_path(p))]
        if not files:
            raise InputError(f"{src}: no images or videos in this folder")
        if dst.resolve() == src.resolve():
            raise OutputError(f"{dst}: the output folder is the input folder; choose another")
        if dst.exists() and not dst.is_dir():
            raise OutputError(f"{dst}: exists and is not a folder")
        clashes = [dst / p.name for p in files if (dst / p.name).exists()]
        if clashes and not (overwrite or resume):
            raise OutputError(f"{clashes[0]}: already exists (and {len(clashes) - 1} more; use --overwrite, or "
                              "--resume to keep them and do the rest)")
        dst.mkdir(parents=True, exist_ok=True)
        kept = clashes if resume and not overwrite else []
        return [(p, dst / p.name) for p in files if dst / p.name not in kept], kept

    def upscale_folder(self, src: str | Path, dst: str | Path, *, overwrite: bool = False,
                       progress: Progress | None = None, resume: bool = False, restart: bool = False) -> list[Result]:
        """Upscale every image and video in a folder into ``dst`` (same file names); with ``resume``, outputs
        that exist are kept and an interrupted video continues."""
        pairs, kept = self.folder_files(src, dst, overwrite=overwrite, resume=resume)
        self.folder = True
        results = []
        for p, out in pairs:
            if is_image_path(p):
                results.append(self.upscale_image(p, out, overwrite=overwrite))
                if progress:
                    progress(1)
            else:
                results.append(self.upscale_video(p, out, overwrite=overwrite, progress=progress, restart=restart))
        if kept and results:
            results[0].notes.append(f"--resume: kept {len(kept)} output(s) an earlier run finished")
        return results


def build_engine(cfg: UpscaleConfig) -> tuple[Engine, LoadedWeights, str]:
    """Load the weights and make an ``Engine`` on the configured device; returns (engine, weights, precision)."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(device, cfg.precision)
    loaded = weights_io.load(cfg.weights)
    notes = []
    supported = loaded.descriptor.precisions
    if precision not in supported:
        if cfg.precision != "auto":
            raise VsrError(f"--precision {precision}: {loaded.path.name} ({loaded.descriptor.arch}) does not run in "
                           f"{precision}; it supports {', '.join(supported)}")
        notes.append(f"{loaded.descriptor.arch} does not support {precision}; running in fp32")
        precision = "fp32"
    upscaler = Upscaler(loaded.model, device=device, precision=precision, descriptor=loaded.descriptor, tile=cfg.tile,
                        tile_overlap=cfg.tile_overlap)
    settings = EncodeSettings(codec=cfg.codec, crf=cfg.crf, preset=cfg.preset, pix_fmt=cfg.pix_fmt,
                              encoder_bound=device.type == "cuda")
    engine = Engine(upscaler, batch_size=cfg.batch_size, settings=settings, skip_corrupt=cfg.skip_corrupt,
                    segment_seconds=cfg.segment_seconds, model_name=cfg.weights)
    engine.notes.extend(notes)
    return engine, loaded, precision

"""The streaming upscale engine: decode -> batch -> infer -> encode, with bounded queues (back-pressure).

A decoder thread reads the input, the calling thread runs the model on batches of frames, and an
encoder thread encodes and muxes. Decoding and encoding overlap inference; the queues are bounded
so memory stays flat for any clip length. Output is written to a temporary file beside the target
and renamed only when everything succeeded.
"""
from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vsr import images
from vsr import weights as weights_io
from vsr.atomic import atomic_output, remove_stale_temps, temp_path_for
from vsr.colour import Yuv420
from vsr.config import UpscaleConfig
from vsr.device import resolve_device, resolve_precision
from vsr.errors import InputError, OutputError, VsrError
from vsr.images import is_image_path
from vsr.inference import Upscaler
from vsr.video import (ContainerCaps, EncodeSettings, Frame, OutputPlan, VideoReader, VideoWriter, is_video_path,
                       plan_output)
from vsr.weights import LoadedWeights

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
    ``send()``; a failure in either thread is raised in the caller. Leaving the ``with`` stops and joins both.
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
        for t in self.threads:
            t.join(timeout=10)

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


class Engine:
    """Upscales videos, images and folders with one ``Upscaler``."""

    def __init__(self, upscaler: Upscaler, *, batch_size: int = 0, settings: EncodeSettings | None = None,
                 skip_corrupt: bool = False, queue_frames: int | None = None, device_colour: bool | None = None) -> None:
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

    def batch_for(self, height: int, width: int) -> int:
        """Frames per model batch for frames of this size."""
        return self.batch_size or self.upscaler.auto_batch(height, width)

    def output_target(self, plan: OutputPlan) -> Yuv420 | None:
        """The YUV 4:2:0 target the pictures are converted to on the device, or None (RGB to the encoder):
        the plan's, where this engine converts on the device."""
        return plan.yuv420 if self.device_colour else None

    def _infer(self, batch: list[Frame], target: Yuv420 | None) -> list[Frame]:
        """The batch's frames upscaled, timing unchanged; as ``target`` planes if one is given."""
        images = self.upscale_frames((f.image for f in batch), yuv=target)
        return [replace(f, image=up, pix_fmt="yuv420p" if target else f.pix_fmt) for f, up in zip(batch, images)]

    def upscale_frames(self, frames: Iterable[np.ndarray], *, yuv: Yuv420 | None = None) -> Iterator[np.ndarray]:
        """Upscale a sequence of (H, W, 3) frames in batches, in order (frames of another size start a new batch);
        with ``yuv``, each comes back as YUV 4:2:0 planes (``Upscaler.upscale``)."""
        batch: list[np.ndarray] = []
        for frame in frames:
            if batch and (len(batch) >= self.batch_for(*batch[0].shape[:2]) or frame.shape != batch[0].shape
                          or frame.dtype != batch[0].dtype):
                yield from self.upscaler.upscale(np.stack(batch), yuv=yuv)
                batch = []
            batch.append(frame)
        if batch:
            yield from self.upscaler.upscale(np.stack(batch), yuv=yuv)

    def upscale_video(self, src: str | Path, dst: str | Path, *, overwrite: bool = False,
                      progress: Progress | None = None, on_start: Callable[[Any], None] | None = None) -> Result:
        """Upscale a video file to ``dst``; audio and subtitles are copied, timing and colour kept."""
        src, dst = Path(src), Path(dst)
        check_output(src, dst, overwrite=overwrite)
        started = time.perf_counter()
        stale = remove_stale_temps(dst)
        with VideoReader(src, skip_corrupt=self.skip_corrupt) as reader:
            info = reader.info
            plan = plan_output(info, ContainerCaps.for_path(dst), scale=self.upscaler.scale, settings=self.settings)
            if on_start:
                on_start(info)
            batch_size = self.batch_for(info.height, info.width)
            result = Result(input=src, output=dst, in_size=(info.width, info.height), out_size=(plan.width, plan.height),
                            batch_size=batch_size, notes=list(plan.notes))
            if stale:
                result.notes.append(f"removed {len(stale)} temporary file(s) that a killed run left beside {dst.name}: "
                                    + ", ".join(p.name for p in stale))
            target = self.output_target(plan)
            depth = self.queue_frames or 2 * batch_size + 2
            with atomic_output(dst) as tmp, VideoWriter(tmp, plan, reader.sources, name=dst) as writer, \
                    _Pump(reader, writer, depth=depth, progress=progress) as pump:
                batch: list[Frame] = []
                for item in pump.items():
                    if not isinstance(item, Frame):
                        pump.send(item)
                        continue
                    batch.append(item)
                    result.frames_in += 1
                    if len(batch) >= batch_size:
                        for frame in self._infer(batch, target):
                            pump.send(frame)
                        batch = []
                for frame in self._infer(batch, target) if batch else ():
                    pump.send(frame)
                pump.drain()
                writer.finish()
                result.frames_out = writer.frames_written
                result.notes.extend(writer.notes)
                self._check_counts(reader, result)
        result.seconds = time.perf_counter() - started
        return result

    @staticmethod
    def _check_counts(reader: VideoReader, result: Result) -> None:
        """Every decoded frame written (else an error), and a note where the container announced other counts."""
        info = reader.info
        if reader.corrupt_packets:
            result.notes.append(f"{reader.corrupt_packets} corrupt packet(s) skipped (--skip-corrupt)")
        if reader.concealed_frames:
            result.notes.append(f"{reader.concealed_frames} damaged frame(s) kept as the decoder concealed them (--skip-corrupt)")
        if result.frames_out != result.frames_in:
            raise VsrError(f"{result.input}: decoded {result.frames_in} frames but wrote {result.frames_out}")
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
        up = self.upscaler.upscale(img.rgb[None])[0]
        (w, h), s = img.size, self.upscaler.scale
        alpha = None if img.alpha is None else cv2.resize(img.alpha, (w * s, h * s), interpolation=cv2.INTER_CUBIC)
        images.write_image(dst, up, alpha=alpha, grey=img.grey)
        return Result(input=src, output=dst, frames_in=1, frames_out=1, seconds=time.perf_counter() - started,
                      in_size=(w, h), out_size=(w * s, h * s))

    def upscale_folder(self, src: str | Path, dst: str | Path, *, overwrite: bool = False,
                       progress: Progress | None = None) -> list[Result]:
        """Upscale every image and video in a folder into ``dst`` (same file names)."""
        src, dst = Path(src), Path(dst)
        files = [p for p in sorted(src.iterdir()) if p.is_file() and (is_image_path(p) or is_video_path(p))]
        if not files:
            raise InputError(f"{src}: no images or videos in this folder")
        if dst.resolve() == src.resolve():
            raise OutputError(f"{dst}: the output folder is the input folder; choose another")
        if dst.exists() and not dst.is_dir():
            raise OutputError(f"{dst}: exists and is not a folder")
        clashes = [dst / p.name for p in files if (dst / p.name).exists()]
        if clashes and not overwrite:
            raise OutputError(f"{clashes[0]}: already exists (and {len(clashes) - 1} more; use --overwrite)")
        dst.mkdir(parents=True, exist_ok=True)
        results = []
        for p in files:
            if is_image_path(p):
                results.append(self.upscale_image(p, dst / p.name, overwrite=overwrite))
                if progress:
                    progress(1)
            else:
                results.append(self.upscale_video(p, dst / p.name, overwrite=overwrite, progress=progress))
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
    engine = Engine(upscaler, batch_size=cfg.batch_size, settings=settings, skip_corrupt=cfg.skip_corrupt)
    engine.notes.extend(notes)
    return engine, loaded, precision

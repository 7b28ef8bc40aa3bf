"""``vsr upscale``: upscale a video, an image, or a folder of them 4x."""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from vsr.cli import register, setup_logging, user_errors
from vsr.config import UpscaleConfig
from vsr.errors import InputError, VsrError
from vsr.weights import DEFAULT_VIDEO_WEIGHTS, DEFAULT_WEIGHTS

if TYPE_CHECKING:
    from tqdm import tqdm

    from vsr.pipeline import Result
    from vsr.video import VideoInfo


def default_output(src: Path, scale: int) -> Path:
    """``clip.mp4`` -> ``clip_x4.mp4``; ``frames/`` -> ``frames_x4/``."""
    if src.is_dir():
        return src.with_name(f"{src.name}_x{scale}")
    return src.with_name(f"{src.stem}_x{scale}{src.suffix}")


def default_weights(src: Path, tile: int = 0) -> str:
    """The model for an input without --weights: the video model for a video file or a folder holding one (it uses
    the frames before each one, and gives an image the single-frame model's picture), the single-frame model for an
    image, a folder of images only, or when --tile asks for tiles (a video model never tiles)."""
    from vsr.images import is_image_path
    from vsr.video import is_video_path

    if tile:
        return DEFAULT_WEIGHTS
    if src.is_dir():
        videos = any(p.is_file() and is_video_path(p) for p in src.iterdir())
        return DEFAULT_VIDEO_WEIGHTS if videos else DEFAULT_WEIGHTS
    return DEFAULT_WEIGHTS if is_image_path(src) else DEFAULT_VIDEO_WEIGHTS


def summary(r: Result, device: str, precision: str, model: str) -> str:
    """The one-line report printed at the end of a run."""
    (w, h), (ow, oh) = r.in_size, r.out_size
    return (f"{r.input} -> {r.output}: {r.frames_in} frames in, {r.frames_out} out, {w}x{h} -> {ow}x{oh}, "
            f"{r.seconds:.2f} s, {r.fps:.2f} fps, model {model}, device {device}, precision {precision}")


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


PROGRESS_EVERY_S = 10.0  # a plain progress line this often when stderr is not a terminal


class LineProgress:
    """Progress for a stderr that is a log file, a pipe or a service journal: no carriage returns, a whole
    ``progress:`` line every ``PROGRESS_EVERY_S`` seconds (the bar of a terminal would glue the next line on)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.name, self.total, self.done, self.initial = "", None, 0, 0
        self.started = self.last = time.monotonic()

    def reset(self, total: int | None = None, done: int = 0) -> None:
        self.total, self.done, self.initial = total, done, done
        self.started = self.last = time.monotonic()

    def set_description(self, name: str) -> None:
        self.name = name

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            of = f"/{self.total} frames ({100 * self.done // self.total}%)" if self.total else " frames"
            fps = (self.done - self.initial) / (now - self.started) if now > self.started else 0.0
            eta = f", ETA {_clock((self.total - self.done) / fps)}" if self.total and fps > 0 else ""
            typer.echo(f"progress: {self.name}: {self.done}{of}, {fps:.2f} fps{eta}", err=True)

    def close(self) -> None:
        pass


def start_progress(bar: tqdm | LineProgress, total: int | None, done: int) -> None:
    """Restart the display for a video of ``total`` frames, ``done`` of them finished by an earlier run (they
    count in the position, not in the speed and ETA)."""
    if isinstance(bar, LineProgress):
        bar.reset(total, done)
        return
    bar.reset(total=total)
    bar.initial = bar.n = done
    bar.refresh()


def progress_display(quiet: bool) -> tqdm | LineProgress:
    """A bar on a terminal; plain periodic lines otherwise (quiet: neither)."""
    if quiet or not sys.stderr.isatty():
        return LineProgress(enabled=not quiet)
    from tqdm import tqdm

    return tqdm(total=None, unit="frame", dynamic_ncols=True, leave=False, delay=0.5, file=sys.stderr)


def upscale(
    input: Annotated[Path, typer.Argument(help="Video file, image file, or folder of them.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output file or folder (default: INPUT_x4.EXT, or _x2 etc. for other scales).")] = None,
    weights: Annotated[Optional[str], typer.Option(help=f"Shipped model name, a .pt from `vsr train export`, or a community model file (.pth/.pt/.ckpt/.safetensors, read by spandrel) (default: {DEFAULT_VIDEO_WEIGHTS} for a video file or a folder holding one, {DEFAULT_WEIGHTS} for an image, a folder of images, or with --tile).", show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto (cuda if available, else cpu), cpu, cuda, cuda:N; for --jobs also a list cuda:0,cuda:1 or cuda:all.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto | fp32 | fp16 | bf16 (auto: bf16 where the device has it).")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Frames per model batch; a temporal model runs this many segments side by side (0 = auto: from the frame size and free memory).")] = 0,
    tile: Annotated[int, typer.Option(help="Tiles of this many input pixels (0 = auto: whole frames unless they exceed the memory budget).")] = 0,
    tile_overlap: Annotated[int, typer.Option(help="Context pixels around each tile (hides seams).")] = 16,
    codec: Annotated[Optional[str], typer.Option(help="Video encoder, e.g. libx264, libx265, libvpx-vp9 (default: as input).")] = None,
    crf: Annotated[Optional[int], typer.Option(help="Quality (lower = better) (default: 18 x264, 20 x265, 30 vp9/av1).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Encoder speed preset (default: x264 medium, or veryfast on a GPU where the encoder is the bottleneck; x265 fast).")] = None,
    pix_fmt: Annotated[Optional[str], typer.Option(help="Output pixel format (default: as input; 10-bit stays 10-bit).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    skip_corrupt: Annotated[bool, typer.Option(help="Skip corrupt video packets with a warning instead of stopping.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; only the summary line and errors.")] = False,
    segment: Annotated[float, typer.Option(help="Seconds of input per segment of a video (0 = one segment). Segments are kept in a work folder beside the output until the end, so an interrupted run resumes.")] = 10.0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run (an error if there is none; a plain rerun of the same command also continues one).")] = False,
    restart: Annotated[bool, typer.Option(help="Discard what an interrupted run of this output left and start over.")] = False,
    jobs: Annotated[int, typer.Option(help="Segment workers (processes) sharing the videos and files; with --device cuda:0,cuda:1 or cuda:all, one GPU each in turn.")] = 1,
    ray: Annotated[Optional[str], typer.Option(help="Run the segments on a Ray cluster: auto (the running one), ADDRESS (host:port), or local (one on this machine for this run). Needs the ray extra; files on a filesystem all nodes share. --jobs: actors (default: one per GPU).")] = None,
) -> None:
    """Upscale a video (audio, subtitles, timing and colour kept), an image, or a folder, 4x."""
    from vsr.device import resolve_devices  # torch and PyAV load with the command, not for `--help`
    from vsr.pipeline import build_engine, is_image_path

    setup_logging(quiet)
    if weights is None:
        weights = default_weights(input, tile)
    cfg = UpscaleConfig(weights=weights, device=device, precision=precision, batch_size=batch_size, tile=tile,
                        tile_overlap=tile_overlap, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt,
                        overwrite=overwrite, skip_corrupt=skip_corrupt, quiet=quiet, segment_seconds=segment,
                        resume=resume, restart=restart, jobs=jobs)
    engine = None

    def interrupted() -> str:
        return engine.interrupted() if engine is not None else "nothing was written"

    with user_errors(on_interrupt=interrupted):
        if not input.exists():
            raise InputError(f"{input}: no such file or folder")
        if jobs < 1:
            raise VsrError(f"--jobs must be at least 1, got {jobs}")
        devices = resolve_devices(device)
        jobs = max(jobs, len(devices))
        cfg.jobs = jobs
        engine, loaded, prec = build_engine(replace(cfg, device=devices[0]))
        cfg.precision = prec  # the workers run as the planning engine does
        for note in engine.notes:
            typer.echo(f"note: {note}", err=True)
        dev = str(engine.upscaler.device)
        out = output or default_output(input, loaded.scale)
        bar = progress_display(quiet)

        def on_start(info: VideoInfo, done: int) -> None:
            start_progress(bar, info.expected_frames or None, done)
            bar.set_description(info.path.name)

        try:
            if (jobs > 1 or ray) and not (input.is_file() and is_image_path(input)):
                from vsr.parallel import upscale_shared

                results = upscale_shared(engine, cfg, input, out, devices=devices, jobs=jobs, ray=ray,
                                         overwrite=overwrite, resume=resume, restart=restart, progress=bar.update,
                                         on_start=on_start)
            elif input.is_dir():
                results = engine.upscale_folder(input, out, overwrite=overwrite, progress=bar.update, resume=resume,
                                                restart=restart)
            elif is_image_path(input):
                results = [engine.upscale_image(input, out, overwrite=overwrite)]
            else:
                results = [engine.upscale_video(input, out, overwrite=overwrite, progress=bar.update, on_start=on_start,
                                                resume=resume, restart=restart)]
        finally:
            bar.close()
        for r in results:
            for note in r.notes:
                typer.echo(f"note: {note}", err=True)
            typer.echo(summary(r, dev, prec, weights))


register(upscale)

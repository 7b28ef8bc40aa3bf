"""PyAV demux/decode and encode/remux: frames in, frames out; knows nothing about models.

``VideoReader`` yields decoded video frames (as RGB arrays with their timing) and, in demux order,
the packets of every stream that is carried over untouched (audio, subtitles). ``VideoWriter``
encodes upscaled frames with the input's timestamps, rotation and colour tags, and muxes the copied
packets (re-encoding audio only where the output container cannot hold its codec).
"""
from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation

from vsr.errors import InputError, OutputError

log = logging.getLogger(__name__)

# swscale flags for YUV<->RGB: accurate rounding and full chroma interpolation (without them swscale
# shifts 8-bit RGB by about -1 level and loses ~3 dB Y-PSNR on detailed frames).
_TO_RGB = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
_TO_YUV = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INP

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".ts", ".mts", ".m2ts", ".flv", ".wmv",
                    ".mpg", ".mpeg", ".3gp", ".ogv", ".y4m")

# decoder name -> (encoder, default CRF, default preset option name, default preset)
ENCODERS: dict[str, tuple[str, int, str | None, str | None]] = {
    "h264": ("libx264", 18, "preset", "medium"),
    "hevc": ("libx265", 20, "preset", "fast"),
    "vp9": ("libvpx-vp9", 30, "cpu-used", "4"),
    "av1": ("libsvtav1", 30, "preset", "8"),
    "mpeg4": ("mpeg4", 0, None, None),
    "ffv1": ("ffv1", 0, None, None),
}
_ENCODER_DEFAULTS = {enc: (crf, opt, preset) for enc, crf, opt, preset in ENCODERS.values()}
# Where the model outpaces the encoder (on a GPU), a faster preset where one was measured: on one H200
# machine x264 encoded 4K at 13.2 fps with veryfast against 6.8 with medium, for 3-8% more bytes at the
# same CRF (benchmarks/RESULTS.md). On a CPU the model is the bottleneck and medium costs nothing.
_ENCODER_BOUND_PRESETS = {"libx264": "veryfast"}


def encoder_defaults(encoder: str, *, encoder_bound: bool = False) -> tuple[int | None, str | None, str | None]:
    """(CRF, preset option name, preset) that vsr uses for ``encoder`` unless told otherwise."""
    crf, opt, preset = _ENCODER_DEFAULTS.get(encoder, (None, None, None))
    return crf, opt, _ENCODER_BOUND_PRESETS.get(encoder, preset) if encoder_bound else preset


@dataclass
class Colour:
    """Colour tags of a video: carried from input frames to output frames and encoder."""

    colorspace: int = 2  # AVCOL_SPC_UNSPECIFIED
    color_range: int = 0  # AVCOL_RANGE_UNSPECIFIED
    color_primaries: int = 2
    color_trc: int = 2

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Colour:
        return cls(int(frame.colorspace), int(frame.color_range), int(frame.color_primaries), int(frame.color_trc))


@dataclass
class Frame:
    """One video frame: its pixels and timing.

    ``image`` is RGB (H, W, 3; uint8, or uint16 for >8-bit sources) when ``pix_fmt`` is None; with
    ``pix_fmt="yuv420p"`` it is 8-bit YUV 4:2:0 planes laid out as PyAV's (3H/2, W) arrays, already
    in the writer's colour matrix and range (made on the model's device, ``vsr.colour``).
    """

    index: int
    image: np.ndarray
    pts: int | None
    time_base: Fraction
    rotation: int = 0
    colour: Colour = field(default_factory=Colour)
    pix_fmt: str | None = None


@dataclass
class VideoInfo:
    """What the reader learned about the input, for the writer and for the summary."""

    path: Path
    width: int
    height: int
    codec: str
    pix_fmt: str
    bit_depth: int
    fps: Fraction
    time_base: Fraction
    frames: int  # from the container; 0 when unknown
    duration_s: float | None
    format_name: str
    copy_streams: list[Any] = field(default_factory=list)
    dropped_streams: list[str] = field(default_factory=list)  # streams that are neither copied nor upscaled

    @property
    def expected_frames(self) -> int:
        """Best estimate of the number of frames (container count, else duration x fps, else 0)."""
        if self.frames:
            return self.frames
        if self.duration_s and self.fps:
            return int(round(self.duration_s * float(self.fps)))
        return 0


def _bit_depth(fmt: av.VideoFormat | None) -> int:
    if fmt is None or not fmt.components:
        return 8
    return max(c.bits for c in fmt.components)


def open_input(path: str | Path) -> av.container.InputContainer:
    """Open a media file for reading, turning every failure into one clear ``InputError``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a video file")
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise InputError(f"{path}: not a readable media file ({exc.strerror or exc})") from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be opened as media ({exc})") from exc


class VideoReader:
    """Decode the first video stream of a file, yielding ``Frame``s and copy-stream ``av.Packet``s.

    Corrupt data raises ``InputError`` naming the frame, unless ``skip_corrupt`` is set, in which case
    the decoder conceals what it can, rejected packets are skipped and counted in ``corrupt_packets``
    (reported by the caller).
    """

    def __init__(self, path: str | Path, *, skip_corrupt: bool = False, threads: int = 0) -> None:
        self.path = Path(path)
        self.skip_corrupt = skip_corrupt
        self.corrupt_packets = 0
        self.container = open_input(self.path)
        videos = [s for s in self.container.streams if s.type == "video"
                  and not (s.disposition & av.stream.Disposition.attached_pic)]
        if not videos:
            self.container.close()
            raise InputError(f"{self.path}: has no video stream")
        self.stream = videos[0]
        self.stream.thread_type = "AUTO"
        if not skip_corrupt:  # make the decoder report damage instead of silently concealing it
            self.stream.codec_context.options = {"err_detect": "careful+explode"}
        if threads:
            self.stream.codec_context.thread_count = threads
        cc = self.stream.codec_context
        if not cc.width or not cc.height:
            self.container.close()
            raise InputError(f"{self.path}: the video stream has no frame size (corrupt header?)")
        fps = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate or Fraction(25)
        duration = None
        if self.stream.duration is not None and self.stream.time_base:
            duration = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration:
            duration = self.container.duration / av.time_base
        self.info = VideoInfo(
            path=self.path, width=cc.width, height=cc.height, codec=cc.name, pix_fmt=cc.format.name if cc.format else "yuv420p",
            bit_depth=_bit_depth(cc.format), fps=Fraction(fps), time_base=Fraction(self.stream.time_base or Fraction(1, 90000)),
            frames=int(self.stream.frames or 0), duration_s=duration, format_name=self.container.format.name,
            copy_streams=[s for s in self.container.streams if s.type in ("audio", "subtitle")],
            dropped_streams=[f"{s.type} stream #{s.index} ({s.codec_context.name if s.codec_context else s.type})"
                             for s in self.container.streams
                             if s.type not in ("audio", "subtitle") and s.index != self.stream.index],
        )

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    def _to_frame(self, index: int, vf: av.VideoFrame) -> Frame:
        depth = _bit_depth(vf.format)
        fmt = "rgb48le" if depth > 8 else "rgb24"
        colour = Colour.of(vf)
        src_range = colour.color_range or None
        image = vf.to_ndarray(format=fmt, src_color_range=src_range, dst_color_range="JPEG", interpolation=_TO_RGB)
        return Frame(index=index, image=image, pts=vf.pts, time_base=Fraction(vf.time_base or self.info.time_base),
                     rotation=int(vf.rotation or 0), colour=colour)

    def _corrupt(self, index: int, packet: av.Packet, exc: Exception | None) -> None:
        where = f"at video frame {index} (packet pts {packet.pts})"
        if not self.skip_corrupt:
            reason = f": {exc}" if exc else ""
            raise InputError(f"{self.path}: corrupt video data {where}{reason}; "
                             "re-run with --skip-corrupt to decode through it (damaged packets skipped with a warning)")
        self.corrupt_packets += 1
        log.warning("%s: skipping corrupt video data %s", self.path, where)

    def __iter__(self) -> Iterator[Frame | av.Packet]:
        index = 0
        copy_ids = {s.index for s in self.info.copy_streams}
        try:
            for packet in self.container.demux(self.stream, *self.info.copy_streams):
                if packet.stream.index in copy_ids:
                    if packet.size:
                        yield packet
                    continue
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:
                    self._corrupt(index, packet, exc)
                    continue
                for vf in decoded:
                    if vf.is_corrupt:
                        self._corrupt(index, packet, None)
                        continue
                    yield self._to_frame(index, vf)
                    index += 1
        except av.FFmpegError as exc:
            if not self.skip_corrupt:
                raise InputError(f"{self.path}: cannot read past video frame {index} ({exc.strerror or exc}); "
                                 "the file is truncated or corrupt (--skip-corrupt keeps what was decoded)") from exc
            self.corrupt_packets += 1
            log.warning("%s: stopped reading after frame %d: %s", self.path, index, exc)
        if index == 0:
            raise InputError(f"{self.path}: the video stream has no decodable frames")


def can_hold(format_name: str, stream: Any) -> bool:
    """Whether a container format can take ``stream``'s packets as they are: tried on an in-memory file
    with one dummy packet, since some muxers only object when they write the trailer."""
    try:
        with av.open(io.BytesIO(), "w", format=format_name) as trial:
            copy = trial.add_stream_from_template(stream)
            trial.start_encoding()
            packet = av.Packet(bytes(64))
            packet.stream = copy
            packet.pts = packet.dts = 0
            packet.duration = 1
            packet.time_base = stream.time_base
            trial.mux(packet)
        return True
    except (av.FFmpegError, ValueError):
        return False


def default_encoder(input_codec: str, container: av.container.OutputContainer) -> str:
    """The encoder for the input's codec if the output container holds it, else the container's default."""
    supported = container.supported_codecs
    if input_codec in ENCODERS and input_codec in supported:
        return ENCODERS[input_codec][0]
    fallback = container.default_video_codec
    return ENCODERS.get(fallback, (fallback,))[0]


def choose_pix_fmt(codec: av.codec.Codec, input_pix_fmt: str, bit_depth: int) -> str:
    """Keep the input pixel format when the encoder takes it; else 4:2:0 at the input's bit depth."""
    formats = [f.name for f in codec.video_formats or []]
    if not formats or input_pix_fmt in formats:
        return input_pix_fmt if formats else "yuv420p"
    if bit_depth > 8:
        for cand in ("yuv420p10le", "yuv420p12le", "yuv420p16le"):
            if cand in formats:
                return cand
        log.warning("encoder %s has no >8-bit 4:2:0 format; writing 8-bit", codec.name)
    return "yuv420p" if "yuv420p" in formats else formats[0]


@dataclass
class EncodeSettings:
    """Output encoding choices; ``None`` means: pick from the input."""

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    threads: int = 0
    encoder_bound: bool = False  # the frames come faster than the encoder takes them (GPU): faster default preset


class VideoWriter:
    """Encode upscaled frames into ``path`` (format from its extension) and remux copied streams."""

    def __init__(self, path: str | Path, info: VideoInfo, *, scale: int, settings: EncodeSettings) -> None:
        self.path = Path(path)
        self.info = info
        self.notes: list[str] = []
        try:
            self.container = av.open(str(self.path), mode="w")
        except (ValueError, av.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.path}: cannot write this file ({exc}); use an extension such as .mp4 or .mkv") from exc
        try:
            self._add_video(scale, settings)
            self._add_copies()
        except Exception:
            self.container.close()
            raise
        self.started = False
        self.pending: list[av.Packet] = []
        self.frames_written = 0
        self.last_pts: int | None = None

    def _add_video(self, scale: int, s: EncodeSettings) -> None:
        name = s.codec or default_encoder(self.info.codec, self.container)
        try:
            codec = av.codec.Codec(name, "w")
        except (av.FFmpegError, ValueError) as exc:
            raise OutputError(f"--codec {name}: no such video encoder in this FFmpeg build") from exc
        if codec.type != "video":
            raise OutputError(f"--codec {name}: is a {codec.type} codec, not a video encoder")
        if codec.name not in self.container.supported_codecs and codec.canonical_name not in self.container.supported_codecs:
            raise OutputError(f"--codec {name}: the {self.container.format.name} container cannot hold it; "
                              "pick another codec or output extension")
        pix_fmt = s.pix_fmt or choose_pix_fmt(codec, self.info.pix_fmt, self.info.bit_depth)
        if codec.video_formats and pix_fmt not in [f.name for f in codec.video_formats]:
            raise OutputError(f"--pix-fmt {pix_fmt}: not supported by {codec.name} "
                              f"(supported: {', '.join(f.name for f in codec.video_formats)})")
        crf, preset_opt, preset = encoder_defaults(codec.name, encoder_bound=s.encoder_bound)
        options: dict[str, str] = {}
        if codec.name in _ENCODER_DEFAULTS and crf:
            options["crf"] = str(s.crf if s.crf is not None else crf)
            if codec.name == "libvpx-vp9":
                options["b"] = "0"
            if codec.name == "libx265":
                options["x265-params"] = "log-level=error"
        elif s.crf is not None:
            raise OutputError(f"--crf is not supported by {codec.name}")
        if preset_opt and (s.preset or preset):
            options[preset_opt] = s.preset or preset
        elif s.preset:
            raise OutputError(f"--preset is not supported by {codec.name}")
        rate = self.info.fps if self.info.fps else Fraction(25)
        stream = self.container.add_stream(codec.name, rate=rate, options=options)
        stream.width = self.info.width * scale
        stream.height = self.info.height * scale
        stream.pix_fmt = pix_fmt
        stream.time_base = self.info.time_base
        stream.codec_context.time_base = self.info.time_base
        if s.threads:
            stream.codec_context.thread_count = s.threads
        self.video = stream
        self.pix_fmt = pix_fmt
        self.encoder = codec.name

    def _add_copies(self) -> None:
        self.copy_map: dict[int, Any] = {}
        self.transcoders: dict[int, tuple[Any, Any]] = {}
        self.notes.extend(f"{name} not carried (only video, audio and subtitles are)" for name in self.info.dropped_streams)
        fmt = self.container.format.name.split(",")[0]
        for src in self.info.copy_streams:
            codec_name = src.codec_context.name if src.codec_context else None
            if can_hold(fmt, src):
                self.copy_map[src.index] = self.container.add_stream_from_template(src)
                continue
            if src.type == "audio" and self.container.default_audio_codec not in (None, "none"):
                target = self.container.default_audio_codec
                out = self.container.add_stream(target, rate=src.codec_context.sample_rate or 48000)
                try:
                    out.layout = src.codec_context.layout
                except (AttributeError, ValueError):
                    pass
                self.transcoders[src.index] = (src, out)
                self.notes.append(f"audio stream #{src.index} ({codec_name}) re-encoded to {target}: "
                                  f"{self.container.format.name} cannot hold {codec_name}")
            else:
                self.notes.append(f"{src.type} stream #{src.index} ({codec_name}) not carried: "
                                  f"{self.container.format.name} cannot hold it (use .mkv to keep it)")

    def _start(self, first: Frame) -> None:
        """Set what is only known from the first decoded frame (rotation, colour), then flush pending packets."""
        if first.rotation:
            self.video.set_display_rotation(first.rotation)
        cc = self.video.codec_context
        self.colour = first.colour
        cc.colorspace = first.colour.colorspace
        cc.color_range = first.colour.color_range
        cc.color_primaries = first.colour.color_primaries
        cc.color_trc = first.colour.color_trc
        self.started = True
        for packet in self.pending:
            self.write_packet(packet)
        self.pending.clear()

    def write_frame(self, frame: Frame) -> None:
        """Encode one upscaled frame with its original timestamp."""
        if not self.started:
            self._start(frame)
        c = self.colour
        if frame.pix_fmt is None:  # RGB: swscale converts it to the output's format, matrix and range
            fmt = "rgb48le" if frame.image.dtype == np.uint16 else "rgb24"
            vf = av.VideoFrame.from_ndarray(frame.image, format=fmt)
            vf = vf.reformat(format=self.pix_fmt, dst_colorspace=c.colorspace if c.colorspace != 2 else None,
                             src_color_range="JPEG", dst_color_range=c.color_range or None, interpolation=_TO_YUV)
        elif frame.pix_fmt == self.pix_fmt:  # converted before it came here
            vf = av.VideoFrame.from_ndarray(frame.image, format=frame.pix_fmt)
        else:
            raise ValueError(f"frame {frame.index} is {frame.pix_fmt}, the encoder takes {self.pix_fmt} or RGB")
        vf.color_range = c.color_range
        pts = frame.pts
        if pts is None or (self.last_pts is not None and pts <= self.last_pts):
            step = max(1, round(1 / (float(self.info.fps or 25) * float(self.info.time_base))))
            pts = (self.last_pts + step) if self.last_pts is not None else 0
            if frame.pts is not None:
                self.notes.append(f"frame {frame.index}: non-increasing timestamp {frame.pts} moved to {pts}")
        vf.pts = pts
        vf.time_base = self.info.time_base
        self.last_pts = pts
        for packet in self.video.encode(vf):
            self.container.mux(packet)
        self.frames_written += 1

    def write_packet(self, packet: av.Packet) -> None:
        """Mux a packet of a copied stream (or re-encode it where the container needs that)."""
        if not self.started:
            self.pending.append(packet)
            return
        idx = packet.stream.index
        if idx in self.copy_map:
            packet.stream = self.copy_map[idx]
            self.container.mux(packet)
        elif idx in self.transcoders:
            src, out = self.transcoders[idx]
            for af in src.codec_context.decode(packet):
                af.pts = None
                self.container.mux(out.encode(af))

    def close(self) -> None:
        """Flush encoders and finish the file."""
        if not self.started:
            raise OutputError(f"{self.path}: no frames were written")
        self.container.mux(self.video.encode(None))
        for src, out in self.transcoders.values():
            for af in src.codec_context.decode(None):
                af.pts = None
                self.container.mux(out.encode(af))
            self.container.mux(out.encode(None))
        self.container.close()

    def abort(self) -> None:
        """Close the container without finishing it (the caller deletes the file)."""
        try:
            self.container.close()
        except Exception as exc:  # closing a half-written file may fail; the file is deleted anyway
            log.debug("closing aborted output %s: %s", self.path, exc)


def is_video_path(path: Path) -> bool:
    """True for file names with a common video extension."""
    return path.suffix.lower() in VIDEO_EXTENSIONS


__all__ = ["Colour", "EncodeSettings", "Frame", "VideoInfo", "VideoReader", "VideoWriter",
           "is_video_path", "open_input"]

"""PyAV demux/decode and encode/remux: frames in, frames out; knows nothing about models.

``VideoReader`` yields decoded video frames (as RGB arrays with their timing) and, in demux order,
the packets of every stream that is carried over untouched (audio, subtitles). ``plan_output`` decides,
from what the reader learned (``VideoInfo``) and the settings alone, how the output is made: encoder,
options, pixel format, time base, colour, which streams are copied, re-encoded or dropped and with which
metadata (``OutputPlan``). ``VideoWriter`` only carries a plan out, and aborts the file on any error.
"""
from __future__ import annotations

import errno
import io
import itertools
import logging
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from av.video.reformatter import Interpolation

from vsr.colour import Yuv420
from vsr.errors import InputError, OutputError

log = logging.getLogger(__name__)

# The APIs below came late: swscale's rounding flags in PyAV 18.0, set_display_rotation in 17.1 (pyproject: av>=18).
if not hasattr(Interpolation, "ACCURATE_RND") or not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
    raise ImportError(f"vsr needs PyAV 18 or newer (this is PyAV {av.__version__}): pip install 'av>=18'")

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
# Tags the muxers write themselves (durations, statistics, the writing library): not carried over.
_MUXER_TAGS = ("duration", "encoder", "handler_name", "vendor_id", "major_brand", "minor_version",
               "compatible_brands", "_statistics_", "number_of_", "bps")
_COPY_TYPES = ("audio", "subtitle")
# Encoders whose bitstream stores the sample aspect ratio (VUI, VOL header). PyAV cannot set a stream's own
# aspect ratio, which Matroska and MP4 muxers would otherwise write, so with other encoders it is lost.
_SAR_IN_BITSTREAM = ("libx264", "libx265", "mpeg4")


def encoder_defaults(encoder: str, *, encoder_bound: bool = False) -> tuple[int | None, str | None, str | None]:
    """(CRF, preset option name, preset) that vsr uses for ``encoder`` unless told otherwise."""
    crf, opt, preset = _ENCODER_DEFAULTS.get(encoder, (None, None, None))
    return crf, opt, _ENCODER_BOUND_PRESETS.get(encoder, preset) if encoder_bound else preset


@dataclass(frozen=True)
class Colour:
    """Colour tags of a video: carried from the input's first frame to the encoder and the output frames."""

    colorspace: int = 2  # AVCOL_SPC_UNSPECIFIED
    color_range: int = 0  # AVCOL_RANGE_UNSPECIFIED
    color_primaries: int = 2
    color_trc: int = 2

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Colour:
        return cls(int(frame.colorspace), int(frame.color_range), int(frame.color_primaries), int(frame.color_trc))


@dataclass(frozen=True)
class Hdr10:
    """HDR10 static metadata: mastering display (CIE xy of R, G, B and white; min/max cd/m2) and light levels."""

    primaries: tuple[tuple[Fraction, Fraction], ...] | None = None  # (R, G, B), each (x, y)
    white: tuple[Fraction, Fraction] | None = None
    luminance: tuple[Fraction, Fraction] | None = None  # (min, max)
    max_cll: int | None = None
    max_fall: int | None = None

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Hdr10 | None:
        """From a decoded frame's side data (AVMasteringDisplayMetadata, AVContentLightMetadata), or None."""
        from av.sidedata.sidedata import Type

        primaries = white = luminance = cll = fall = None
        for sd in frame.side_data:
            raw = bytes(sd)
            if sd.type == Type.MASTERING_DISPLAY_METADATA and len(raw) >= 88:
                v = struct.unpack_from("<20i2i", raw)
                q = [Fraction(v[i], v[i + 1]) if v[i + 1] else Fraction(0) for i in range(0, 20, 2)]
                if v[20]:
                    primaries, white = ((q[0], q[1]), (q[2], q[3]), (q[4], q[5])), (q[6], q[7])
                if v[21]:
                    luminance = (q[8], q[9])
            elif sd.type == Type.CONTENT_LIGHT_LEVEL and len(raw) >= 8:
                cll, fall = struct.unpack_from("<2I", raw)
        if primaries is None and luminance is None and cll is None:
            return None
        return cls(primaries, white, luminance, cll, fall)

    def x265_params(self) -> list[str]:
        """``master-display`` (x,y in 0.00002 units, luminance in 0.0001 cd/m2) and ``max-cll`` for x265."""
        def xy(point: tuple[Fraction, Fraction]) -> str:
            return f"({round(point[0] * 50000)},{round(point[1] * 50000)})"

        params = []
        if self.primaries and self.white and self.luminance:
            (r, g, b), (lo, hi) = self.primaries, self.luminance
            params.append(f"master-display=G{xy(g)}B{xy(b)}R{xy(r)}WP{xy(self.white)}"
                          f"L({round(hi * 10000)},{round(lo * 10000)})")
        if self.max_cll is not None:
            params.append(f"max-cll={self.max_cll},{self.max_fall or 0}")
        return params


@dataclass(frozen=True)
class StreamInfo:
    """A non-video input stream as the plan sees it; ``template`` is the PyAV stream (for the writer)."""

    index: int
    type: str
    codec: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)
    disposition: int = 0
    sample_rate: int = 0
    layout: str | None = None
    template: Any = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.type} stream #{self.index} ({self.codec or self.type})"


@dataclass(frozen=True)
class Frame:
    """One video frame: its pixels, their layout, and its timing.

    ``pix_fmt`` names the layout of ``image``: ``rgb24`` (H, W, 3 uint8) or ``rgb48le`` (uint16) as decoded
    and upscaled, or ``yuv420p`` planes as PyAV's (3H/2, W) uint8 arrays, already in the plan's colour
    matrix and range (made on the model's device, ``vsr.colour``).
    """

    index: int
    image: np.ndarray
    pts: int | None
    time_base: Fraction
    pix_fmt: str = "rgb24"


@dataclass
class VideoInfo:
    """What the reader learned about the input (the first frame included), for the plan and the summary."""

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
    sar: Fraction | None = None  # sample aspect ratio; None when square or unknown
    rotation: int = 0
    colour: Colour = field(default_factory=Colour)
    hdr: Hdr10 | None = None
    streams: list[StreamInfo] = field(default_factory=list)  # every stream other than the upscaled one
    metadata: Mapping[str, str] = field(default_factory=dict)  # container tags (title, ...)
    video_metadata: Mapping[str, str] = field(default_factory=dict)
    video_disposition: int = 0
    chapters: list[dict] = field(default_factory=list)

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


def _tags(metadata: Mapping[str, str]) -> dict[str, str]:
    """The tags worth carrying: everything except what muxers write themselves."""
    return {k: v for k, v in metadata.items() if not any(k.lower().startswith(m) for m in _MUXER_TAGS)}


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


def _stream_info(s: Any) -> StreamInfo:
    cc = s.codec_context
    rate = getattr(cc, "sample_rate", 0) or 0
    layout = getattr(getattr(cc, "layout", None), "name", None) if s.type == "audio" else None
    return StreamInfo(index=s.index, type=s.type, codec=cc.name if cc else None, metadata=_tags(s.metadata),
                      disposition=int(s.disposition), sample_rate=rate, layout=layout, template=s)


class VideoReader:
    """Decode the first video stream of a file, yielding ``Frame``s and copy-stream ``av.Packet``s.

    The first frame is decoded when the reader opens (its colour tags, rotation and HDR side data are part
    of ``info``) and yielded first. Corrupt data raises ``InputError`` naming the frame, unless
    ``skip_corrupt`` is set: then the decoder conceals what it can (concealed frames are kept and counted
    in ``concealed_frames``), rejected packets are skipped and counted in ``corrupt_packets``, and a demux
    error ends the input after the frames the decoder still holds.
    """

    def __init__(self, path: str | Path, *, skip_corrupt: bool = False, threads: int = 0, video_only: bool = False) -> None:
        self.path = Path(path)
        self.skip_corrupt = skip_corrupt
        self.video_only = video_only  # yield frames only (a segment's worker: the join copies the other streams)
        self.threads = threads
        self.corrupt_packets = 0
        self.concealed_frames = 0
        self.container = open_input(self.path)
        try:
            self._open()
        except BaseException:
            self.container.close()
            raise

    def _open(self) -> None:
        videos = [s for s in self.container.streams if s.type == "video"
                  and not (s.disposition & av.stream.Disposition.attached_pic)]
        if not videos:
            raise InputError(f"{self.path}: has no video stream")
        self.stream = videos[0]
        self.stream.thread_type = "AUTO"
        if not self.skip_corrupt:  # make the decoder report damage instead of silently concealing it
            self.stream.codec_context.options = {"err_detect": "careful+explode"}
        if self.threads:
            self.stream.codec_context.thread_count = self.threads
        cc = self.stream.codec_context
        if not cc.width or not cc.height:
            raise InputError(f"{self.path}: the video stream has no frame size (corrupt header?)")
        fps = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate or Fraction(25)
        duration = None
        if self.stream.duration is not None and self.stream.time_base:
            duration = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration:
            duration = self.container.duration / av.time_base
        sar = self.stream.sample_aspect_ratio or cc.sample_aspect_ratio
        others = [s for s in self.container.streams if s.index != self.stream.index]
        self.info = VideoInfo(
            path=self.path, width=cc.width, height=cc.height, codec=cc.name, pix_fmt=cc.format.name if cc.format else "yuv420p",
            bit_depth=_bit_depth(cc.format), fps=Fraction(fps), time_base=Fraction(self.stream.time_base or Fraction(1, 90000)),
            frames=int(self.stream.frames or 0), duration_s=duration, format_name=self.container.format.name,
            sar=Fraction(sar) if sar and sar != 1 else None, streams=[_stream_info(s) for s in others],
            metadata=_tags(self.container.metadata), video_metadata=_tags(self.stream.metadata),
            video_disposition=int(self.stream.disposition), chapters=list(self.container.chapters()),
        )
        self._copy = [s for s in others if s.type in _COPY_TYPES]
        self._demuxed = [] if self.video_only else self._copy
        self._items = self._demux()
        self._ahead: list[Frame | av.Packet] = []
        for item in self._items:  # up to the first frame: what the plan needs to know
            self._ahead.append(item)
            if isinstance(item, Frame):
                break
        first = self._first
        self.info.colour, self.info.rotation, self.info.hdr = Colour.of(first), int(first.rotation or 0), Hdr10.of(first)
        del self._first

    @property
    def sources(self) -> dict[int, Any]:
        """Input streams by index, for the writer to copy or re-encode from."""
        return {s.index: s for s in self._copy}

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    def _to_frame(self, index: int, vf: av.VideoFrame) -> Frame:
        if index == 0:
            self._first = vf
        fmt = "rgb48le" if _bit_depth(vf.format) > 8 else "rgb24"
        src_range = int(vf.color_range) or None
        image = vf.to_ndarray(format=fmt, src_color_range=src_range, dst_color_range="JPEG", interpolation=_TO_RGB)
        return Frame(index=index, image=image, pts=vf.pts, time_base=Fraction(vf.time_base or self.info.time_base),
                     pix_fmt=fmt)

    def _corrupt(self, index: int, packet: av.Packet, exc: Exception | None) -> None:
        where = f"at video frame {index} (packet pts {packet.pts})"
        if not self.skip_corrupt:
            reason = f": {exc}" if exc else ""
            raise InputError(f"{self.path}: corrupt video data {where}{reason}; "
                             "re-run with --skip-corrupt to decode through it (damaged packets skipped with a warning)")
        self.corrupt_packets += 1
        log.warning("%s: skipping corrupt video data %s", self.path, where)

    def _packets(self) -> Iterator[av.Packet]:
        return self.container.demux(self.stream, *self._demuxed)

    def _demux(self, *, from_start: bool = True) -> Iterator[Frame | av.Packet]:
        index = 0
        copy_ids = {s.index for s in self._demuxed}
        decoder = self.stream.codec_context
        ended = False
        try:
            for packet in self._packets():
                if packet.stream.index in copy_ids:
                    if packet.size:
                        yield packet
                    continue
                try:
                    decoded = decoder.decode(packet if packet.size else None)
                except av.FFmpegError as exc:
                    self._corrupt(index, packet, exc)
                    continue
                ended = ended or not packet.size
                for vf in decoded:
                    if vf.is_corrupt:
                        if not self.skip_corrupt:
                            self._corrupt(index, packet, None)
                        self.concealed_frames += 1
                    yield self._to_frame(index, vf)
                    index += 1
        except av.FFmpegError as exc:
            if not self.skip_corrupt:
                raise InputError(f"{self.path}: cannot read past video frame {index} ({exc.strerror or exc}); "
                                 "the file is truncated or corrupt (--skip-corrupt keeps what was decoded)") from exc
            self.corrupt_packets += 1
            log.warning("%s: stopped reading after frame %d: %s", self.path, index, exc)
        if not ended:  # the frames a (threaded) decoder still holds
            try:
                for vf in decoder.decode(None):
                    yield self._to_frame(index, vf)
                    index += 1
            except av.FFmpegError as exc:
                if not self.skip_corrupt:
                    raise InputError(f"{self.path}: corrupt video data at the end ({exc})") from exc
                self.corrupt_packets += 1
        if index == 0 and from_start:  # (after a seek, the caller judges what came)
            raise InputError(f"{self.path}: the video stream has no decodable frames")

    def __iter__(self) -> Iterator[Frame | av.Packet]:
        while self._ahead:
            yield self._ahead.pop(0)
        yield from self._items

    def frames_between(self, start: int | None, end: int | None, *, first_index: int = 0) -> Iterator[Frame]:
        """The frames shown from ``start`` up to (not including) ``end`` (pts in the stream's time base; None: open),
        numbered from ``first_index``: the input is sought to the keyframe before ``start`` and decoded forward to
        the exact frame (from the beginning where the container's index lands after it)."""
        if start is None:
            yield from self._frames_in(iter(self), None, end, first_index)
            return
        # A container's index may be of decode times, or coarse: a seek can land on a keyframe shown after
        # ``start``. Then seek a second and ten seconds earlier, and at last decode from the beginning.
        tb = self.info.time_base
        for back in (0, 1, 10):
            try:
                self.container.seek(start - int(back / tb), stream=self.stream, backward=True, any_frame=False)
            except av.FFmpegError:
                continue
            self.stream.codec_context.flush_buffers()
            self._ahead = []
            items = self._demux(from_start=False)
            first = next((item for item in items if isinstance(item, Frame)), None)
            if first is not None and first.pts is not None and first.pts <= start:
                yield from self._frames_in(itertools.chain([first], items), start, end, first_index)
                return
        self.container.close()
        self.container = open_input(self.path)
        self._open()
        yield from self._frames_in(iter(self), start, end, first_index)

    def _frames_in(self, items: Iterator[Frame | av.Packet], start: int | None, end: int | None,
                   index: int) -> Iterator[Frame]:
        for item in items:
            if not isinstance(item, Frame):
                continue
            if item.pts is None:
                if start is None and end is None:  # the whole video: timestamps are the writer's business
                    yield replace(item, index=index)
                    index += 1
                    continue
                raise InputError(f"{self.path}: frame {index} has no timestamp; cannot cut the video into segments")
            if start is not None and item.pts < start:
                continue
            if end is not None and item.pts >= end:
                return
            yield replace(item, index=index)
            index += 1

    def presentation_times(self) -> list[int] | None:
        """The pts of every video frame in display order, from the packets alone (nothing is decoded); None where
        some packet has none or two share one (such a video is not cut into segments)."""
        with open_input(self.path) as c:
            stream = c.streams[self.stream.index]
            times = []
            try:
                for packet in c.demux(stream):
                    if packet.size:
                        if packet.pts is None:
                            return None
                        times.append(int(packet.pts))
            except av.FFmpegError:
                return None
        times.sort()
        if any(a == b for a, b in zip(times, times[1:])):
            return None
        return times

    def copy_packets(self) -> Iterator[av.Packet]:
        """The packets of the streams carried over (audio, subtitles), in demux order, from a second opening of the
        input (the join of segments, which decodes no video)."""
        if not self._copy:
            return
        with open_input(self.path) as c:
            for packet in c.demux(*[c.streams[s.index] for s in self._copy]):
                if packet.size:
                    yield packet


def can_hold(format_name: str, stream: StreamInfo) -> bool:
    """Whether a container format can take ``stream``'s packets as they are: tried on an in-memory file
    with one dummy packet, since some muxers only object when they write the trailer."""
    src = stream.template
    try:
        with av.open(io.BytesIO(), "w", format=format_name) as trial:
            copy = trial.add_stream_from_template(src)
            trial.start_encoding()
            packet = av.Packet(bytes(64))
            packet.stream = copy
            packet.pts = packet.dts = 0
            packet.duration = 1
            packet.time_base = src.time_base
            trial.mux(packet)
        return True
    except (av.FFmpegError, ValueError):
        return False


@dataclass(frozen=True)
class ContainerCaps:
    """What an output container format can hold, as FFmpeg reports it."""

    format_name: str  # e.g. "mp4", "matroska", "webm"
    supported_codecs: frozenset[str]
    default_video_codec: str
    default_audio_codec: str | None

    @classmethod
    def for_path(cls, path: str | Path) -> ContainerCaps:
        """The format FFmpeg picks for ``path``'s extension (nothing is written)."""
        try:
            with av.open(str(path), mode="w") as c:
                audio = c.default_audio_codec
                return cls(c.format.name.split(",")[0], frozenset(c.supported_codecs), c.default_video_codec,
                           None if audio in (None, "none") else audio)
        except (ValueError, av.FFmpegError, OSError) as exc:
            raise OutputError(f"{path}: cannot write this file ({exc}); use an extension such as .mp4 or .mkv") from exc


def default_encoder(input_codec: str, caps: ContainerCaps) -> str:
    """The encoder for the input's codec if the output container holds it, else the container's default."""
    if input_codec in ENCODERS and input_codec in caps.supported_codecs:
        return ENCODERS[input_codec][0]
    fallback = caps.default_video_codec
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


@dataclass(frozen=True)
class StreamPlan:
    """What happens to one non-video input stream: copied as is, re-encoded to ``codec``, or dropped."""

    index: int
    action: Literal["copy", "transcode", "drop"]
    codec: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    disposition: int = 0


@dataclass(frozen=True)
class OutputPlan:
    """Every decision about the output file, made before anything is written (``plan_output``)."""

    format_name: str
    encoder: str
    options: Mapping[str, str]
    pix_fmt: str
    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    colour: Colour
    yuv420: Yuv420 | None  # the 8-bit 4:2:0 target a device may convert to, or None (the encoder takes RGB)
    sar: Fraction | None = None
    rotation: int = 0
    threads: int = 0
    streams: tuple[StreamPlan, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    video_metadata: Mapping[str, str] = field(default_factory=dict)
    video_disposition: int = 0
    chapters: tuple[dict, ...] = ()
    notes: tuple[str, ...] = ()


def _encoder_error(encoder: str, *, width: int, height: int, pix_fmt: str, time_base: Fraction, rate: Fraction,
                   options: Mapping[str, str], sar: Fraction | None = None) -> str | None:
    """Open ``encoder`` with these settings, encoding nothing: None if it accepts them, else FFmpeg's reason."""
    cc = av.codec.CodecContext.create(encoder, "w")
    cc.width, cc.height, cc.pix_fmt = width, height, pix_fmt
    cc.time_base, cc.framerate = time_base, rate
    if sar:
        cc.sample_aspect_ratio = sar
    opts = dict(options)
    if encoder == "libx265":
        opts["x265-params"] = "log-level=none"
    cc.options = opts
    try:
        cc.open()
    except (av.FFmpegError, ValueError) as exc:
        return str(getattr(exc, "strerror", None) or exc)
    finally:
        del cc
    return None


def _standard_time_bases(fps: Fraction) -> list[Fraction]:
    """Time bases to try for an encoder that refuses the input's: one tick per frame, then milliseconds."""
    per_frame = Fraction(fps.denominator, fps.numerator) if fps else Fraction(1, 25)
    return [per_frame, Fraction(1, 1000)]


def plan_output(info: VideoInfo, caps: ContainerCaps, *, scale: int, settings: EncodeSettings,
                holds: Callable[[str, StreamInfo], bool] = can_hold) -> OutputPlan:
    """Decide the output of upscaling ``info`` ``scale``-x into a ``caps`` container: pure, except that it
    asks FFmpeg what the encoder and the muxer accept; raises ``OutputError`` for what cannot be written."""
    s = settings
    name = s.codec or default_encoder(info.codec, caps)
    try:
        codec = av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError) as exc:
        raise OutputError(f"--codec {name}: no such video encoder in this FFmpeg build") from exc
    if codec.type != "video":
        raise OutputError(f"--codec {name}: is a {codec.type} codec, not a video encoder")
    if codec.name not in caps.supported_codecs and codec.canonical_name not in caps.supported_codecs:
        raise OutputError(f"--codec {name}: the {caps.format_name} container cannot hold it; "
                          "pick another codec or output extension")
    pix_fmt = s.pix_fmt or choose_pix_fmt(codec, info.pix_fmt, info.bit_depth)
    if codec.video_formats and pix_fmt not in [f.name for f in codec.video_formats]:
        raise OutputError(f"--pix-fmt {pix_fmt}: not supported by {codec.name} "
                          f"(supported: {', '.join(f.name for f in codec.video_formats)})")
    notes: list[str] = []
    crf, preset_opt, preset = encoder_defaults(codec.name, encoder_bound=s.encoder_bound)
    options: dict[str, str] = {}
    if codec.name in _ENCODER_DEFAULTS and crf:
        options["crf"] = str(s.crf if s.crf is not None else crf)
        if codec.name == "libvpx-vp9":
            options["b"] = "0"
    elif s.crf is not None:
        raise OutputError(f"--crf is not supported by {codec.name}")
    if preset_opt and (s.preset or preset):
        options[preset_opt] = s.preset or preset
    elif s.preset:
        raise OutputError(f"--preset is not supported by {codec.name}")
    width, height = info.width * scale, info.height * scale
    rate = info.fps or Fraction(25)

    time_base = info.time_base
    trial = dict(width=width, height=height, pix_fmt=pix_fmt, rate=rate, options=options, sar=info.sar)
    reason = _encoder_error(codec.name, time_base=time_base, **trial)
    if reason and not _encoder_error(codec.name, time_base=time_base, **{**trial, "width": 64, "height": 64}):
        others = [enc for enc, *_ in ENCODERS.values() if enc != codec.name and enc in caps.supported_codecs
                  and not _encoder_error(enc, time_base=time_base, **{**trial, "options": {}, "pix_fmt": "yuv420p"})]
        hint = f"--codec {others[0]}, which takes it," if others else "another codec or container"
        raise OutputError(f"{info.path}: the {width}x{height} output is too large for {codec.name} ({reason}); "
                          f"use {hint} or a smaller input")
    if reason:
        for cand in _standard_time_bases(rate):
            if not _encoder_error(codec.name, time_base=cand, **trial):
                notes.append(f"{codec.name} does not take the input's time base {time_base}: timestamps written in {cand}")
                time_base, reason = cand, None
                break
    if reason:
        raise OutputError(f"{info.path}: {codec.name} cannot encode {width}x{height} {pix_fmt} at {rate} fps "
                          f"({reason}); pick another --codec or --pix-fmt")

    if info.hdr is not None:
        if codec.name == "libx265":
            options["x265-params"] = ":".join(["log-level=error", *info.hdr.x265_params()])
        else:
            notes.append(f"HDR10 mastering display / light level metadata not carried: {codec.name} does not "
                         "write it (use --codec libx265)")
    elif codec.name == "libx265":
        options["x265-params"] = "log-level=error"

    if info.sar and codec.name not in _SAR_IN_BITSTREAM:
        notes.append(f"sample aspect ratio {info.sar.numerator}:{info.sar.denominator} not carried: {codec.name} does not "
                     "store it, so the picture will look stretched (use --codec libx264 or libx265)")

    streams = []
    for st in info.streams:
        keep = dict(metadata=st.metadata, disposition=st.disposition)
        if st.type not in _COPY_TYPES:
            if not (st.type == "data" and st.codec is None and info.chapters):  # an mp4 chapter track: chapters below
                notes.append(f"{st.label} not carried (only video, audio and subtitles are)")
            streams.append(StreamPlan(st.index, "drop"))
        elif holds(caps.format_name, st):
            streams.append(StreamPlan(st.index, "copy", st.codec, **keep))
        elif st.type == "audio" and caps.default_audio_codec:
            streams.append(StreamPlan(st.index, "transcode", caps.default_audio_codec, **keep))
            notes.append(f"{st.label} re-encoded to {caps.default_audio_codec}: {caps.format_name} cannot hold {st.codec}")
        else:
            streams.append(StreamPlan(st.index, "drop"))
            notes.append(f"{st.label} not carried: {caps.format_name} cannot hold it (use .mkv to keep it)")
    yuv420 = (Yuv420.for_tags(info.colour.colorspace, info.colour.color_range)
              if pix_fmt == "yuv420p" and info.bit_depth <= 8 else None)
    return OutputPlan(
        format_name=caps.format_name, encoder=codec.name, options=options, pix_fmt=pix_fmt, width=width, height=height,
        rate=rate, time_base=time_base, colour=info.colour, yuv420=yuv420, sar=info.sar, rotation=info.rotation,
        threads=s.threads, streams=tuple(streams), metadata=dict(info.metadata), video_metadata=dict(info.video_metadata),
        video_disposition=info.video_disposition, chapters=tuple(info.chapters), notes=tuple(notes))


def add_video_stream(container: av.container.OutputContainer, plan: OutputPlan) -> Any:
    """The plan's video stream in ``container``: encoder, options, size, time base, colour, aspect, rotation, tags."""
    p = plan
    stream = container.add_stream(p.encoder, rate=p.rate, options=dict(p.options))
    stream.width, stream.height, stream.pix_fmt = p.width, p.height, p.pix_fmt
    stream.time_base = p.time_base
    cc = stream.codec_context
    cc.time_base = p.time_base
    if p.sar:
        cc.sample_aspect_ratio = p.sar
        stream.sample_aspect_ratio = p.sar
    cc.colorspace, cc.color_range = p.colour.colorspace, p.colour.color_range
    cc.color_primaries, cc.color_trc = p.colour.color_primaries, p.colour.color_trc
    if p.threads:
        cc.thread_count = p.threads
    if p.rotation:
        stream.set_display_rotation(p.rotation)
    stream.metadata.update(p.video_metadata)
    stream.disposition = av.stream.Disposition(p.video_disposition)
    return stream


class FrameEncoder:
    """Encode upscaled frames with a plan's video stream: pixels converted to the output format, timestamps
    rescaled to the plan's time base (a non-increasing one moved forward, with a note); the packets are returned,
    muxing them is the caller's."""

    def __init__(self, stream: Any, plan: OutputPlan) -> None:
        self.stream, self.plan = stream, plan
        self.notes: list[str] = []
        self.frames = 0
        self.last_pts: int | None = None

    def encode(self, frame: Frame) -> list[av.Packet]:
        """The packets the encoder gives for one more frame, shown at its original time."""
        p = self.plan
        c = p.colour
        if frame.pix_fmt in ("rgb24", "rgb48le"):  # swscale converts it to the output's format, matrix and range
            vf = av.VideoFrame.from_ndarray(frame.image, format=frame.pix_fmt)
            vf = vf.reformat(format=p.pix_fmt, dst_colorspace=c.colorspace if c.colorspace != 2 else None,
                             src_color_range="JPEG", dst_color_range=c.color_range or None, interpolation=_TO_YUV)
        elif frame.pix_fmt == p.pix_fmt:  # converted before it came here
            vf = av.VideoFrame.from_ndarray(frame.image, format=frame.pix_fmt)
        else:
            raise ValueError(f"frame {frame.index} is {frame.pix_fmt}, the encoder takes {p.pix_fmt} or RGB")
        vf.color_range = c.color_range
        pts = None if frame.pts is None else round(frame.pts * frame.time_base / p.time_base)
        if pts is None or (self.last_pts is not None and pts <= self.last_pts):
            step = max(1, round(1 / (float(p.rate) * float(p.time_base))))
            moved = (self.last_pts + step) if self.last_pts is not None else 0
            if frame.pts is not None:
                self.notes.append(f"frame {frame.index}: non-increasing timestamp {frame.pts} moved to {moved}")
            pts = moved
        vf.pts = pts
        vf.time_base = p.time_base
        self.last_pts = pts
        packets = self.stream.encode(vf)
        self.frames += 1
        return packets

    def flush(self) -> list[av.Packet]:
        """The packets the encoder still holds."""
        return self.stream.encode(None)


class PacketEncoder(FrameEncoder):
    """The plan's video encoder on its own, set up exactly as ``VideoWriter``'s (in a container of the plan's
    format, so the same header flags, that is never written): for video packets stored elsewhere (segments)."""

    def __init__(self, plan: OutputPlan) -> None:
        self.container = av.open(io.BytesIO(), mode="w", format=plan.format_name)
        super().__init__(add_video_stream(self.container, plan), plan)

    def open(self) -> None:
        """Open the encoder now (its global header exists from then on)."""
        self.stream.codec_context.open()

    @property
    def extradata(self) -> bytes:
        """The encoder's global header (SPS/PPS and the like; empty where the format keeps them in the packets)."""
        return bytes(self.stream.codec_context.extradata or b"")

    def __enter__(self) -> PacketEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()


class VideoWriter:
    """Carry out an ``OutputPlan`` into ``path``: encode frames, mux copied packets, re-encode audio.

    With ``encoded``, the video arrives as packets already encoded under the same plan (``write_encoded``: the
    join of segments) and the file is otherwise made the same way. A context manager: ``finish()`` flushes and
    completes the file; leaving the ``with`` without it (an
    error, Ctrl-C, SIGTERM) closes the container unfinished (the atomic output around it deletes it).
    Write failures name ``name`` (the file the user asked for), not the hidden temp file.
    """

    def __init__(self, path: str | Path, plan: OutputPlan, sources: Mapping[int, Any], *, name: str | Path | None = None,
                 encoded: bool = False) -> None:
        self.path = Path(path)
        self.name = Path(name) if name is not None else self.path
        self.plan = plan
        self.encoded = encoded  # the video comes as packets a ``PacketEncoder`` made (write_encoded), not as frames
        self.packets_written = 0
        self.finished = False
        try:
            self.container = av.open(str(self.path), mode="w", format=plan.format_name)
        except (ValueError, av.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.name}: cannot write this file ({exc})") from exc
        try:
            self._setup(sources)
        except BaseException:
            self.container.close()
            raise

    def _setup(self, sources: Mapping[int, Any]) -> None:
        p = self.plan
        c = self.container
        c.metadata.update(p.metadata)
        self.video = add_video_stream(c, p)
        self.frames = FrameEncoder(self.video, p)
        self.copies: dict[int, Any] = {}
        self.transcoders: dict[int, tuple[Any, Any]] = {}
        for sp in p.streams:
            src = sources.get(sp.index)
            if sp.action == "drop" or src is None:
                continue
            if sp.action == "copy":
                out = c.add_stream_from_template(src)
                self.copies[sp.index] = out
            else:
                out = c.add_stream(sp.codec, rate=src.codec_context.sample_rate or 48000)
                try:
                    out.layout = src.codec_context.layout
                except (AttributeError, ValueError):
                    pass
                self.transcoders[sp.index] = (src, out)
            out.metadata.update(sp.metadata)
            out.disposition = av.stream.Disposition(sp.disposition)
        if p.chapters:
            c.set_chapters(list(p.chapters))

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self.finished:
            self.abort()

    def _mux(self, packets: Any) -> None:
        try:
            self.container.mux(packets)
        except (av.FFmpegError, OSError) as exc:
            raise self._write_error(exc) from exc

    def _write_error(self, exc: BaseException) -> OutputError:
        if getattr(exc, "errno", None) == errno.ENOSPC:
            return OutputError(f"{self.name}: no space left on the device; free some space or write elsewhere")
        return OutputError(f"{self.name}: cannot write the video ({getattr(exc, 'strerror', None) or exc})")

    @property
    def frames_written(self) -> int:
        return self.frames.frames

    @property
    def notes(self) -> list[str]:
        return self.frames.notes

    def write_frame(self, frame: Frame) -> None:
        """Encode one upscaled frame at its original time (rescaled to the plan's time base)."""
        self._mux(self.frames.encode(frame))

    def write_encoded(self, packet: av.Packet) -> None:
        """Mux a video packet that a ``PacketEncoder`` with this plan made (timestamps in the plan's time base)."""
        packet.stream = self.video
        packet.time_base = self.plan.time_base
        self._mux(packet)
        self.packets_written += 1

    def start(self) -> bytes:
        """Write the header now; returns the video encoder's global header (to compare with the segments')."""
        try:
            self.container.start_encoding()
        except (av.FFmpegError, OSError) as exc:
            raise self._write_error(exc) from exc
        return bytes(self.video.codec_context.extradata or b"")

    def write_packet(self, packet: av.Packet) -> None:
        """Mux a packet of a copied stream (or re-encode it where the plan says so)."""
        idx = packet.stream.index
        if idx in self.copies:
            packet.stream = self.copies[idx]
            self._mux(packet)
        elif idx in self.transcoders:
            src, out = self.transcoders[idx]
            for af in src.codec_context.decode(packet):
                self._mux(out.encode(af))

    def finish(self) -> None:
        """Flush the encoders and complete the file."""
        if not (self.packets_written if self.encoded else self.frames_written):
            raise OutputError(f"{self.name}: no frames were written")
        if not self.encoded:
            self._mux(self.frames.flush())
        for src, out in self.transcoders.values():
            for af in src.codec_context.decode(None):
                self._mux(out.encode(af))
            self._mux(out.encode(None))
        try:
            self.container.close()
        except (av.FFmpegError, OSError) as exc:
            raise self._write_error(exc) from exc
        self.finished = True

    def abort(self) -> None:
        """Close the container without finishing it (the caller deletes the file)."""
        try:
            self.container.close()
        except Exception as exc:  # closing a half-written file may fail; the file is deleted anyway
            log.debug("closing aborted output %s: %s", self.path, exc)
        self.finished = True


def is_video_path(path: Path) -> bool:
    """True for file names with a common video extension."""
    return path.suffix.lower() in VIDEO_EXTENSIONS


__all__ = ["Colour", "ContainerCaps", "EncodeSettings", "Frame", "FrameEncoder", "Hdr10", "OutputPlan", "PacketEncoder",
           "StreamInfo", "StreamPlan", "VideoInfo", "VideoReader", "VideoWriter", "add_video_stream", "is_video_path",
           "open_input", "plan_output"]

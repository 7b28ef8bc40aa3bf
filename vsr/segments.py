"""Segments of a video upscale: the plan of time ranges, the packet files they are encoded into, and their join.

A long video is upscaled as closed segments (each starts with a keyframe, since each is a fresh encoder) so
that an interrupted run can resume and several workers can share one video. A segment is a range of input
frames by presentation time, so every frame belongs to exactly one, whatever the seek precision. Its video
packets are stored exactly as the encoder gave them (a small packet file: no container shifts a timestamp),
and the join muxes them, with the input's audio and subtitles copied once, through the same ``VideoWriter``
and plan a single pass would use: the output is the same file either way.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av

from vsr.atomic import atomic_output
from vsr.errors import OutputError
from vsr.video import Frame, OutputPlan, PacketEncoder

SEGMENT_SECONDS = 10.0  # default length of a segment (of input time)
_MAGIC = b"VSRSEG1\n"
_RECORD = struct.Struct("<qqqIB")  # pts, dts, duration, size, flags (1 = keyframe)
_NONE = -(2**63)  # a missing timestamp


@dataclass(frozen=True)
class Segment:
    """Input frames ``first_frame`` .. ``first_frame + frames - 1`` (display order), shown from ``start`` up to
    ``end`` (pts in the input video stream's time base; None: from the beginning / to the end)."""

    index: int
    first_frame: int
    frames: int  # as the packets announce (the decoder decides; the done record has the real count)
    start: int | None
    end: int | None
    warmup: int = 0  # frames before ``first_frame`` a temporal model sees first (their pictures are not kept)
    warm_start: int | None = None  # the first of them (pts; None: from the beginning)


def plan_segments(times: list[int] | None, fps: Fraction, seconds: float, *, warmup: int = 0) -> list[Segment]:
    """Cut a video whose frames show at ``times`` into segments of about ``seconds`` (a short tail joins the
    last one); one segment when ``seconds`` is 0, the times are unknown, or the video is short. ``warmup``: the
    frames a temporal model runs through before each segment (after the first) to build up its state."""
    n = len(times) if times else 0
    per = max(1, round(seconds * float(fps or 25)))
    if seconds <= 0 or times is None or n < 2 * per:
        return [Segment(0, 0, n, None, None)]
    starts = list(range(0, n, per))
    if n - starts[-1] < per // 2:
        starts.pop()
    out = []
    for k, first in enumerate(starts):
        last = starts[k + 1] if k + 1 < len(starts) else n
        w = min(warmup, first)
        out.append(Segment(k, first, last - first, None if k == 0 else times[first],
                           times[last] if last < n else None, warmup=w,
                           warm_start=times[first - w] if w and first - w > 0 else None))
    return out


@dataclass(frozen=True)
class PacketFileInfo:
    """What a finished packet file holds, as written (kept in its done record and checked before the join)."""

    packets: int
    bytes: int
    sha256: str
    extradata: str  # hex of the encoder's global header


class PacketFile:
    """Write encoded video packets, exactly as the encoder gave them, to ``path`` (atomically: a temp file beside
    it, renamed by ``close``; an exception inside the ``with`` leaves nothing)."""

    def __init__(self, path: Path, *, time_base: Fraction, extradata: bytes) -> None:
        self.path = Path(path)
        self._atomic = atomic_output(self.path)
        tmp = self._atomic.__enter__()
        self._file = open(tmp, "wb")
        self._hash = hashlib.sha256()
        self.packets = 0
        self.extradata = extradata
        header = json.dumps({"time_base": str(time_base), "extradata": extradata.hex()}).encode() + b"\n"
        self._write(_MAGIC + header)

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write the segment ({exc.strerror or exc})") from exc
        self._hash.update(data)

    def write(self, packets: Iterable[av.Packet]) -> None:
        for p in packets:
            data = bytes(p)
            pts = _NONE if p.pts is None else int(p.pts)
            dts = _NONE if p.dts is None else int(p.dts)
            self._write(_RECORD.pack(pts, dts, int(p.duration or 0), len(data), 1 if p.is_keyframe else 0) + data)
            self.packets += 1

    def __enter__(self) -> PacketFile:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self._finish()
        else:
            self._file.close()
            self._atomic.__exit__(exc_type, exc, tb)

    def _finish(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            size = self._file.tell()
        finally:
            self._file.close()
        self._atomic.__exit__(None, None, None)  # renames the temp file over the segment
        self.info = PacketFileInfo(self.packets, size, self._hash.hexdigest(), self.extradata.hex())


class SegmentWriter:
    """Encode a segment's upscaled frames with the plan's encoder (as ``VideoWriter`` would) into a packet file;
    ``finish()`` flushes the encoder, leaving the ``with`` puts the file in place (or removes it on an error)."""

    def __init__(self, path: Path, plan: OutputPlan) -> None:
        self.encoder = PacketEncoder(plan)
        try:
            self.encoder.open()
            self.file = PacketFile(path, time_base=plan.time_base, extradata=self.encoder.extradata)
        except BaseException:
            self.encoder.__exit__(None, None, None)
            raise

    @property
    def frames_written(self) -> int:
        return self.encoder.frames

    @property
    def notes(self) -> list[str]:
        return self.encoder.notes

    def write_frame(self, frame: Frame) -> None:
        self.file.write(self.encoder.encode(frame))

    def write_packet(self, packet: av.Packet) -> None:
        raise TypeError("a segment holds video only")

    def finish(self) -> None:
        self.file.write(self.encoder.flush())

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.file.__exit__(exc_type, exc, tb)
        finally:
            self.encoder.__exit__(None, None, None)
        self.info = getattr(self.file, "info", None)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _header(f: BinaryIO, path: Path) -> dict:
    try:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise ValueError("no magic")
        return json.loads(f.readline())
    except ValueError as exc:
        raise OutputError(f"{path}: not a vsr segment file") from exc


def read_packets(path: Path) -> tuple[dict, Iterator[av.Packet]]:
    """The header (time base, extradata) of a packet file and its packets (in the order written)."""
    f = open(path, "rb")
    try:
        header = _header(f, path)
    except BaseException:
        f.close()
        raise
    time_base = Fraction(header["time_base"])

    def packets() -> Iterator[av.Packet]:
        with f:
            while rec := f.read(_RECORD.size):
                if len(rec) < _RECORD.size:
                    raise OutputError(f"{path}: the segment file is cut short")
                pts, dts, duration, size, flags = _RECORD.unpack(rec)
                data = f.read(size)
                if len(data) < size:
                    raise OutputError(f"{path}: the segment file is cut short")
                p = av.Packet(data)
                p.pts = None if pts == _NONE else pts
                p.dts = None if dts == _NONE else dts
                p.duration = duration
                p.time_base = time_base
                p.is_keyframe = bool(flags & 1)
                yield p

    return header, packets()


def joined_video(files: list[Path]) -> Iterator[av.Packet]:
    """The packets of the segment files in order, decode timestamps kept increasing across the joins (an
    encoder's first dts of a segment is extrapolated backwards and may reach into the previous one's)."""
    last_dts: int | None = None
    for path in files:
        _, packets = read_packets(path)
        for p in packets:
            if p.dts is not None and last_dts is not None and p.dts <= last_dts:
                p.dts = last_dts + 1
                if p.pts is not None and p.dts > p.pts:
                    raise OutputError(f"{path}: cannot join the segment: its decode times overlap the previous one's")
            if p.dts is not None:
                last_dts = p.dts
            yield p


def _seconds(p: av.Packet) -> float:
    t = p.dts if p.dts is not None else p.pts
    return float(t * p.time_base) if t is not None and p.time_base else 0.0


def interleave(video: Iterator[av.Packet], others: Iterator[av.Packet]) -> Iterator[tuple[bool, av.Packet]]:
    """(is_video, packet) for the video and the copied-stream packets, merged by decode time (so the muxer's
    interleaving queue stays short)."""
    tagged_video = ((_seconds(p), 0, n, True, p) for n, p in enumerate(video))
    tagged_other = ((_seconds(p), 1, n, False, p) for n, p in enumerate(others))
    for *_, is_video, p in heapq.merge(tagged_video, tagged_other):
        yield is_video, p


def extradata_of(path: Path) -> bytes:
    """The encoder's global header a packet file was written with."""
    with open(path, "rb") as f:
        return bytes.fromhex(_header(f, path)["extradata"])


__all__ = ["PacketFile", "PacketFileInfo", "SEGMENT_SECONDS", "Segment", "SegmentWriter", "extradata_of", "file_sha256", "interleave",
           "joined_video", "plan_segments", "read_packets"]

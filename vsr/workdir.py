"""The work folder of a segmented upscale, beside its target: what a rerun may reuse and what it must refuse.

``.NAME.vsr-work/`` holds ``manifest.json`` (the input's identity, every setting that shapes the output, the
model's hash, the segment plan), the finished segments (``seg-NNNNN.vsrseg``) and a done record for each
(``seg-NNNNN.json``: frames, packets, bytes, SHA-256), and ``lock`` (the host and pid of the run using it).
A segment counts as finished only when its record and its file agree; anything else is redone.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vsr.atomic import HOST, pid_alive, atomic_output, remove_stale_temps
from vsr.errors import OutputError, VsrError
from vsr.segments import PacketFileInfo, Segment, file_sha256

VERSION = 1
_HEAD_BYTES = 1 << 20  # the part of the input that is hashed (with its size and mtime, a cheap identity)


def work_dir_for(target: Path) -> Path:
    """``out/film_x4.mkv`` -> ``out/.film_x4.mkv.vsr-work``."""
    target = Path(target)
    return target.with_name(f".{target.name}.vsr-work")


def input_identity(path: Path) -> dict[str, Any]:
    """Size, modification time and a hash of the head of a file: what tells a rerun it is the same input."""
    st = path.stat()
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(_HEAD_BYTES)).hexdigest()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": head}


@dataclass
class Manifest:
    """What a segmented upscale is: compared field by field when a rerun finds a work folder."""

    input: dict[str, Any]
    settings: dict[str, Any]  # everything that shapes the output pictures and packets
    model: dict[str, Any]  # name and SHA-256 of the network's tensors
    segments: list[Segment]
    run: dict[str, Any] = field(default_factory=dict)  # recorded, not compared: device, batch size, jobs
    version: int = VERSION

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text)
        if d.get("version") != VERSION:
            raise ValueError(f"manifest version {d.get('version')}, this vsr writes {VERSION}")
        d["segments"] = [Segment(**s) for s in d["segments"]]
        return cls(**d)


def differences(old: Manifest, new: Manifest) -> list[str]:
    """What changed between the run that made a work folder and this one, in words (empty: it may resume)."""
    out = []
    a, b = old.input, new.input
    if a["size"] != b["size"] or a["head_sha256"] != b["head_sha256"]:
        out.append("the input file's content changed")
    elif a["mtime_ns"] != b["mtime_ns"]:
        out.append("the input file was modified")
    if old.model.get("sha256") != new.model.get("sha256"):
        out.append(f"the model changed ({old.model.get('name')} -> {new.model.get('name')})")
    for key in sorted(set(old.settings) | set(new.settings)):
        if old.settings.get(key) != new.settings.get(key):
            out.append(f"{key} {old.settings.get(key)!r} -> {new.settings.get(key)!r}")
    if not out and old.segments != new.segments:
        out.append("the segment plan changed")
    return out


@dataclass(frozen=True)
class SegmentRecord:
    """A finished segment, as its worker left it."""

    index: int
    frames: int
    info: PacketFileInfo
    notes: tuple[str, ...] = ()
    corrupt_packets: int = 0
    concealed_frames: int = 0


class WorkDir:
    """The work folder of one target file."""

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        self.path = work_dir_for(self.target)
        self.manifest_path = self.path / "manifest.json"
        self.lock_path = self.path / "lock"

    def segment_path(self, index: int) -> Path:
        return self.path / f"seg-{index:05d}.vsrseg"

    def record_path(self, index: int) -> Path:
        return self.path / f"seg-{index:05d}.json"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def open(self, manifest: Manifest, *, restart: bool = False, resume: bool = False) -> list[str]:
        """Take the folder for this run: reuse it if it was made for the same input, model and settings, start it
        afresh with ``restart``, refuse otherwise (``VsrError`` saying what differs); returns notes."""
        notes: list[str] = []
        self._check_lock()
        if self.path.exists() and not self.exists():
            shutil.rmtree(self.path, ignore_errors=True)  # a run killed before its manifest was written
        if self.exists():
            try:
                old = Manifest.from_json(self.manifest_path.read_text())
                diff = differences(old, manifest)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                old, diff = None, [f"its manifest is unreadable ({exc})"]
            if diff and not restart:
                raise VsrError(f"{self.target}: an unfinished run of another job left {self.path.name} "
                               f"({'; '.join(diff)}); rerun with that job's input and settings to resume it, "
                               "or add --restart to discard it")
            if diff:
                notes.append(f"--restart: discarded the unfinished run in {self.path.name} ({'; '.join(diff)})")
                self.remove()
            elif restart:
                notes.append(f"--restart: discarded the unfinished run in {self.path.name}")
                self.remove()
        elif resume:
            raise VsrError(f"{self.target}: nothing to resume (no {self.path.name} beside it); "
                           "run without --resume to start")
        if not self.exists():
            self.path.mkdir(parents=True, exist_ok=True)
            self._write(self.manifest_path, manifest.to_json())
        self._write(self.lock_path, f"{HOST} {os.getpid()}\n")
        for seg in manifest.segments:
            remove_stale_temps(self.segment_path(seg.index))
        return notes

    def _check_lock(self) -> None:
        try:
            host, pid = self.lock_path.read_text().split()
        except (OSError, ValueError):
            return
        if host == HOST and int(pid) != os.getpid() and pid_alive(int(pid)):
            raise VsrError(f"{self.target}: another vsr (pid {pid}) is writing this output now; "
                           "wait for it or stop it first")

    def _write(self, path: Path, text: str) -> None:
        try:
            with atomic_output(path) as tmp:
                tmp.write_text(text)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc

    def commit(self, record: SegmentRecord) -> None:
        """Mark a segment finished (its file is already in place)."""
        d = asdict(record)
        self._write(self.record_path(record.index), json.dumps(d, sort_keys=True))

    def finished(self, segment: Segment, *, verify: bool = True) -> SegmentRecord | None:
        """The record of a finished segment whose file is intact (size and SHA-256); None otherwise, after
        removing what is left of it, so it is redone."""
        try:
            d = json.loads(self.record_path(segment.index).read_text())
            record = SegmentRecord(index=d["index"], frames=d["frames"], info=PacketFileInfo(**d["info"]),
                                   notes=tuple(d.get("notes", ())), corrupt_packets=d.get("corrupt_packets", 0),
                                   concealed_frames=d.get("concealed_frames", 0))
            path = self.segment_path(segment.index)
            ok = record.index == segment.index and path.stat().st_size == record.info.bytes
            if ok and verify:
                ok = file_sha256(path) == record.info.sha256
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if ok:
            return record
        self.record_path(segment.index).unlink(missing_ok=True)
        self.segment_path(segment.index).unlink(missing_ok=True)
        return None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def release(self) -> None:
        """Let another run take the folder (it stays, to resume)."""
        self.lock_path.unlink(missing_ok=True)


__all__ = ["Manifest", "SegmentRecord", "WorkDir", "differences", "input_identity", "work_dir_for"]

"""Atomic outputs: every file vsr writes goes to a hidden temp file beside its target, renamed over it on success.

The temp name carries the host and the process id (``.NAME.vsr-tmp-HOST-PID.EXT``), so a later run can
tell the leftovers of a process that died (``kill -9``, power loss) from those of one that is still
writing, and remove only the former.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32] or "host"


def temp_path_for(target: Path) -> Path:
    """A hidden temporary file beside ``target`` with the same extension (so the format is the same)."""
    target = Path(target)
    return target.with_name(f".{target.stem}.vsr-tmp-{HOST}-{os.getpid()}{target.suffix}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temps(target: Path) -> list[Path]:
    """Temp files of ``target`` left by dead processes of this host (never another host's, never a live one's)."""
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    pattern = re.compile(rf"^\.{re.escape(target.stem)}\.vsr-tmp-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)"
                         rf"{re.escape(target.suffix)}$")
    found = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for p in entries:
        m = pattern.match(p.name)
        if not m or m["host"] != HOST or not p.is_file():
            continue
        pid = int(m["pid"])
        if pid != os.getpid() and not pid_alive(pid):
            found.append(p)
    return sorted(found)


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove what :func:`stale_temps` finds; returns the removed paths (for a ``note:``)."""
    removed = []
    for p in stale_temps(target):
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


@contextmanager
def atomic_output(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``target``; on a clean exit it replaces ``target``, on any exception it is removed.

    ``BaseException`` included: Ctrl-C, and SIGTERM once the CLI turns it into an exception, leave nothing.
    """
    target = Path(target)
    tmp = temp_path_for(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

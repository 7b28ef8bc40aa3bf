"""The one atomic-output helper: rename on success, nothing left on failure, only dead processes' leftovers removed."""
import os
import subprocess
import sys

import pytest

from vsr.atomic import HOST, atomic_output, remove_stale_temps, stale_temps, temp_path_for


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_success_replaces_the_target_and_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.vsr-tmp-") and tmp.suffix == ".mp4"
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_only_dead_processes_temps_of_this_target_are_removed(tmp_path):
    target = tmp_path / "clip.mkv"
    dead = tmp_path / f".clip.vsr-tmp-{HOST}-{_dead_pid()}.mkv"
    live = tmp_path / f".clip.vsr-tmp-{HOST}-{os.getppid()}.mkv"        # our parent is alive
    mine = temp_path_for(target)
    other_host = tmp_path / f".clip.vsr-tmp-otherbox-{_dead_pid()}.mkv"   # its PIDs mean nothing here
    other_target = tmp_path / f".clip2.vsr-tmp-{HOST}-{_dead_pid()}.mkv"
    other_ext = tmp_path / f".clip.vsr-tmp-{HOST}-{_dead_pid()}.mp4"
    for p in (dead, live, mine, other_host, other_target, other_ext):
        p.write_bytes(b"x")
    assert stale_temps(target) == [dead]
    assert remove_stale_temps(target) == [dead]
    assert not dead.exists()
    assert all(p.exists() for p in (live, mine, other_host, other_target, other_ext))

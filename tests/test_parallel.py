"""``--jobs N``: segments and files shared out over worker processes make the same files as one process."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip
from conftest import X264_RERUN
from typer.testing import CliRunner

from vsr.cli import app
from vsr.device import resolve_devices
from vsr.errors import VsrError
from vsr.images import write_image
from vsr.parallel import worker_devices

runner = CliRunner()


def upscale(*args: object):
    return runner.invoke(app, ["upscale", *map(str, args), "--device", "cpu", "--quiet"])


def packets(path: Path, kind: str) -> list[tuple]:
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        return [(p.pts, p.dts, bytes(p)) for p in c.demux(streams[0]) if p.size] if streams else []


@X264_RERUN
def test_two_workers_make_the_same_file_as_one_process(tmp_path: Path, tiny_weights: Path):
    src = make_clip(tmp_path / "in.mkv", frames=60, width=48, height=32, fps=12, audio="aac", subtitles=True)
    one = upscale(src, "-o", tmp_path / "one.mkv", "--weights", tiny_weights, "--segment", "1")
    two = upscale(src, "-o", tmp_path / "two.mkv", "--weights", tiny_weights, "--segment", "1", "--jobs", "2")
    assert one.exit_code == 0 and two.exit_code == 0, two.output
    assert "60 frames in, 60 out" in two.stdout
    for kind in ("video", "audio", "subtitle"):  # 5 segments made by two processes: the very same packets
        assert packets(tmp_path / "two.mkv", kind) == packets(tmp_path / "one.mkv", kind) != []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "one.mkv", "tiny.pt", "two.mkv"]


def test_a_folder_is_shared_out_and_resume_keeps_what_is_done(tmp_path: Path, tiny_weights: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "a.mp4", frames=30, fps=12, audio=None)
    make_clip(folder / "b.mkv", frames=20, fps=12, audio="aac")
    rng = np.random.default_rng(0)
    write_image(folder / "c.png", rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
    res = upscale(folder, "-o", tmp_path / "out", "--weights", tiny_weights, "--segment", "1", "--jobs", "2")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4", "b.mkv", "c.png"]
    assert len(packets(tmp_path / "out" / "a.mp4", "video")) == 30 and len(packets(tmp_path / "out" / "b.mkv", "video")) == 20
    (tmp_path / "out" / "b.mkv").unlink()
    again = upscale(folder, "-o", tmp_path / "out", "--weights", tiny_weights, "--jobs", "2")
    assert again.exit_code == 1 and "--resume" in again.stderr  # outputs exist: say how to keep them
    again = upscale(folder, "-o", tmp_path / "out", "--weights", tiny_weights, "--segment", "1", "--jobs", "2",
                    "--resume")
    assert again.exit_code == 0 and "kept 2 output(s)" in again.stderr, again.output
    assert len(packets(tmp_path / "out" / "b.mkv", "video")) == 20


def test_devices_for_workers():
    assert worker_devices(["cuda:0", "cuda:1"], 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert resolve_devices("cpu") == ["cpu"]
    with pytest.raises(VsrError, match="no device"):
        resolve_devices(" , ")
    res = upscale(Path(__file__), "--jobs", "0")
    assert res.exit_code == 1 and "--jobs must be at least 1" in res.stderr


@X264_RERUN
@pytest.mark.slow
def test_ray_on_a_local_instance_makes_the_same_files(tmp_path: Path, tiny_weights: Path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    src = make_clip(tmp_path / "in.mkv", frames=60, width=48, height=32, fps=12, audio="aac", subtitles=True)
    one = upscale(src, "-o", tmp_path / "one.mkv", "--weights", tiny_weights, "--segment", "1")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "in.mkv").write_bytes(src.read_bytes())
    write_image(folder / "c.png", np.full((20, 24, 3), 100, dtype=np.uint8))
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("vsr-ray-*"))
    res = upscale(folder, "-o", tmp_path / "out", "--weights", tiny_weights, "--segment", "1", "--ray", "local",
                  "--jobs", "2")
    assert one.exit_code == 0 and res.exit_code == 0, res.output
    assert set(Path(tempfile.gettempdir()).glob("vsr-ray-*")) == before  # the local instance's files are gone
    for kind in ("video", "audio", "subtitle"):  # 5 segments on two Ray actors: the very same packets
        assert packets(tmp_path / "out" / "in.mkv", kind) == packets(tmp_path / "one.mkv", kind) != []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c.png", "in.mkv"]

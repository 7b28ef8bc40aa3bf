"""Images and folders: 4x, greyscale stays greyscale, alpha and 16-bit kept, atomic writes."""
from pathlib import Path

import cv2
import numpy as np
from clips import frame_image, make_clip, probe
from typer.testing import CliRunner

from vsr.cli import app


def test_rgb_grey_alpha_and_16bit(tmp_path: Path, engine):
    rgb = frame_image(0, 20, 14)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb)
    cv2.imwrite(str(tmp_path / "grey.png"), rgb[:, :, 0])
    cv2.imwrite(str(tmp_path / "alpha.png"), np.dstack([rgb, np.full((14, 20), 128, np.uint8)]))
    cv2.imwrite(str(tmp_path / "deep.png"), frame_image(0, 20, 14, dtype=np.uint16))
    for name, shape, dtype in [("rgb", (56, 80, 3), np.uint8), ("grey", (56, 80), np.uint8),
                               ("alpha", (56, 80, 4), np.uint8), ("deep", (56, 80, 3), np.uint16)]:
        r = engine.upscale_image(tmp_path / f"{name}.png", tmp_path / f"{name}_x4.png")
        out = cv2.imread(str(tmp_path / f"{name}_x4.png"), cv2.IMREAD_UNCHANGED)
        assert out.shape == shape and out.dtype == dtype, name
        assert r.out_size == (80, 56)
    assert np.all(cv2.imread(str(tmp_path / "alpha_x4.png"), cv2.IMREAD_UNCHANGED)[:, :, 3] == 128)


def test_folder_of_images_and_videos_via_cli(tmp_path: Path, tiny_weights: Path):
    src = tmp_path / "frames"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"{i:03d}.png"), frame_image(i, 16, 12))
    make_clip(src / "clip.mp4", frames=3)
    (src / "notes.txt").write_text("ignored")
    res = CliRunner().invoke(app, ["upscale", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights), "-q"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000.png", "001.png", "002.png", "clip.mp4"]
    assert cv2.imread(str(tmp_path / "out" / "001.png")).shape == (48, 64, 3)
    assert probe(tmp_path / "out" / "clip.mp4")["frames"] == 3
    again = CliRunner().invoke(app, ["upscale", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights)])
    assert again.exit_code == 1 and "already exists" in again.output


def test_corrupt_image_is_a_clear_error(tmp_path: Path, tiny_weights: Path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    res = CliRunner().invoke(app, ["upscale", str(tmp_path / "bad.png"), "--weights", str(tiny_weights)])
    assert res.exit_code == 1 and "bad.png" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "tiny.pt"]

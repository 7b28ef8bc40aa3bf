"""Images and folders: 4x with the pixels in the right place (RGB order, orientation, alpha), greyscale stays
greyscale, 16-bit stays 16-bit, EXIF orientation applied, sizes checked from the header, clear write errors."""
import errno
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clips import frame_image, make_clip, probe
from PIL import Image as PILImage
from PIL import ImageOps
from typer.testing import CliRunner

from vsr import images
from vsr.cli import app
from vsr.errors import InputError, OutputError
from vsr.inference import Upscaler
from vsr.pipeline import Engine


class RedInvertingNearest(torch.nn.Module):
    """A stand-in generator whose output is predictable: nearest x4, with red (channel 0 only) inverted.

    A channel swap anywhere between file and model, or back, moves the inversion to another colour.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([1.0 - x[:, :1], x[:, 1:]], dim=1)
        return F.interpolate(x, scale_factor=4, mode="nearest") * 2.0 - 1.0


@pytest.fixture
def exact() -> Engine:
    return Engine(Upscaler(RedInvertingNearest(), device=torch.device("cpu"), precision="fp32"), batch_size=1)


def _asymmetric(width: int = 20, height: int = 14, *, peak: int = 255) -> np.ndarray:
    """RGB, every pixel distinct and R, G, B unrelated: reveals channel swaps, flips and transposes."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 11 + 3, y * 17 + 5, (x * 7 + y * 13) % 64 + 100], axis=-1).astype(np.float64)
    return (rgb * peak / 255).round().astype(np.uint16 if peak > 255 else np.uint8)


def _expected(rgb: np.ndarray, peak: int = 255) -> np.ndarray:
    out = rgb.repeat(4, axis=0).repeat(4, axis=1).copy()
    out[..., 0] = peak - out[..., 0]
    return out


def test_colour_image_keeps_rgb_order_and_orientation(tmp_path: Path, exact: Engine):
    rgb = _asymmetric()
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[:, :, ::-1])  # OpenCV files are BGR
    r = exact.upscale_image(tmp_path / "rgb.png", tmp_path / "rgb_x4.png")
    out = cv2.imread(str(tmp_path / "rgb_x4.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    assert r.in_size == (20, 14) and r.out_size == (80, 56)
    np.testing.assert_array_equal(out, _expected(rgb))


def test_sixteen_bit_stays_sixteen_bit_with_its_low_bits(tmp_path: Path, exact: Engine):
    rgb = _asymmetric(peak=65535) + 3  # not multiples of 257: an 8-bit detour would lose them
    cv2.imwrite(str(tmp_path / "deep.png"), rgb[:, :, ::-1])
    exact.upscale_image(tmp_path / "deep.png", tmp_path / "deep_x4.png")
    out = cv2.imread(str(tmp_path / "deep_x4.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    assert out.dtype == np.uint16
    assert np.abs(out.astype(np.int64) - _expected(rgb, 65535)).max() <= 1


def test_grey_stays_grey(tmp_path: Path, exact: Engine):
    grey = _asymmetric()[:, :, 1]
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    assert images.read_image(tmp_path / "grey.png").grey
    exact.upscale_image(tmp_path / "grey.png", tmp_path / "grey_x4.png")
    out = cv2.imread(str(tmp_path / "grey_x4.png"), cv2.IMREAD_UNCHANGED)
    want = cv2.cvtColor(_expected(np.repeat(grey[:, :, None], 3, axis=2)), cv2.COLOR_RGB2GRAY)
    assert out.shape == (56, 80)
    np.testing.assert_array_equal(out, want)


def test_alpha_gradient_is_resized_in_place(tmp_path: Path, exact: Engine):
    rgb = _asymmetric()
    alpha = np.tile(np.linspace(0, 255, 20).round().astype(np.uint8), (14, 1))  # left transparent, right opaque
    cv2.imwrite(str(tmp_path / "alpha.png"), np.dstack([rgb[:, :, ::-1], alpha]))
    exact.upscale_image(tmp_path / "alpha.png", tmp_path / "alpha_x4.png")
    out = cv2.imread(str(tmp_path / "alpha_x4.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (56, 80, 4)
    np.testing.assert_array_equal(out[:, :, 2::-1], _expected(rgb))
    a = out[:, :, 3].astype(int)
    assert (a == a[0]).all()  # constant down each column, as the input
    ramp = np.interp((np.arange(80) + 0.5) / 4 - 0.5, np.arange(20), alpha[0].astype(float))
    assert np.abs(a[0] - ramp).max() <= 3 and a[0, 0] < 10 and a[0, -1] > 245


def _oriented_jpeg(path: Path, stored: np.ndarray, orientation: int, fmt: str = "JPEG") -> None:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    PILImage.fromarray(stored).save(path, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])  # lossless, so the comparison is exact; OpenCV turns TIFFs itself
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path: Path, orientation: int, fmt: str):
    stored = _asymmetric(9, 6)
    path = tmp_path / f"o.{fmt.lower()}"
    _oriented_jpeg(path, stored, orientation, fmt=fmt)
    with PILImage.open(path) as im:
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = images.read_image(path)
    np.testing.assert_array_equal(got.rgb, want)
    assert images.image_size(path) == got.size == (want.shape[1], want.shape[0])


def test_phone_photo_with_orientation_6_comes_out_upright(tmp_path: Path, exact: Engine):
    stored = np.zeros((180, 144, 3), np.uint8)  # stored 144 wide, 180 high
    stored[:, :] = (0, 0, 200)
    stored[:60, :48] = (220, 30, 30)  # a red block at the stored top-left ...
    _oriented_jpeg(tmp_path / "phone.jpg", stored, 6)
    assert images.image_size(tmp_path / "phone.jpg") == (180, 144)
    assert images.image_size((tmp_path / "phone.jpg").read_bytes()) == (180, 144)
    r = exact.upscale_image(tmp_path / "phone.jpg", tmp_path / "phone_x4.jpg")
    assert r.in_size == (180, 144) and r.out_size == (720, 576)
    with PILImage.open(tmp_path / "phone_x4.jpg") as im:
        assert im.size == (720, 576) and im.getexif().get(0x0112) in (None, 1)
        shown = np.asarray(im.convert("RGB")).astype(int)
    # ... is shown at the top-right once turned 90 degrees clockwise (red inverted by the stand-in model)
    assert abs(shown[20, 700] - (255 - 220, 30, 30)).max() < 25
    assert abs(shown[20, 20] - (255, 0, 200)).max() < 25 and abs(shown[560, 700] - (255, 0, 200)).max() < 25


def test_size_is_checked_from_the_header_before_decoding(tmp_path: Path, monkeypatch):
    cv2.imwrite(str(tmp_path / "big.png"), _asymmetric(40, 30))

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(images.cv2, "imdecode", no_decode)
    assert images.image_size(tmp_path / "big.png") == (40, 30)
    with pytest.raises(InputError, match=r"big.png: 40x30 is 1,200 pixels, more than the limit of 1,000"):
        images.read_image(tmp_path / "big.png", max_pixels=1000)


def test_a_full_disk_names_the_output_and_leaves_nothing(tmp_path: Path, exact: Engine, monkeypatch, capfd):
    cv2.imwrite(str(tmp_path / "in.png"), _asymmetric()[:, :, ::-1])

    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputError) as err:
        exact.upscale_image(tmp_path / "in.png", tmp_path / "out.png")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'out.png'}: no space left") and "\n" not in msg
    assert "extension" not in msg and "vsr-tmp" not in msg
    assert "libpng" not in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_formats_that_cannot_hold_the_image_are_refused_before_any_work(tmp_path: Path, exact: Engine, monkeypatch):
    cv2.imwrite(str(tmp_path / "deep.png"), _asymmetric(peak=65535))
    cv2.imwrite(str(tmp_path / "alpha.png"), np.dstack([_asymmetric(), np.full((14, 20), 9, np.uint8)]))
    monkeypatch.setattr(exact.upscaler, "upscale", lambda *a, **k: pytest.fail("the model ran"))
    with pytest.raises(OutputError, match=r"out.xyz: cannot write an image with the extension '.xyz'"):
        exact.upscale_image(tmp_path / "alpha.png", tmp_path / "out.xyz")
    with pytest.raises(OutputError, match=r"8-bit images only and this one is 16-bit"):
        exact.upscale_image(tmp_path / "deep.png", tmp_path / "deep.jpg")
    with pytest.raises(OutputError, match=r"cannot hold the alpha channel"):
        exact.upscale_image(tmp_path / "alpha.png", tmp_path / "alpha.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpha.png", "deep.png"]


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

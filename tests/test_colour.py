"""RGB -> YUV 4:2:0 on the device against swscale, and the engine that uses it for the encoder."""
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clips import frame_image, make_clip, probe, swscale_yuv420p
from conftest import tiny_model

from vsr.colour import Yuv420, rgb_to_yuv420p
from vsr.inference import Upscaler
from vsr.pipeline import Engine
from vsr.video import ContainerCaps, EncodeSettings, VideoReader, plan_output


def _picture(h: int = 48, w: int = 64) -> np.ndarray:
    """Detail at several scales: random blocks bicubically enlarged plus a fine stripe pattern."""
    rng = np.random.default_rng(3)
    coarse = torch.from_numpy(rng.random((1, 3, h // 4, w // 4), dtype=np.float32))
    x = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    x = 0.8 * x + 0.2 * frame_image(0, w, h).astype(np.float32) / 255
    return (x.clip(0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("colorspace,color_range,chroma_bias", [
    (2, 0, 0.0),  # untagged: BT.601, limited
    (1, 1, 0.0),  # BT.709 limited
    (9, 1, 0.0),  # BT.2020
    (1, 2, 0.5),  # BT.709 full range (swscale rounds chroma half a level lower there)
])
def test_matchesswscale_yuv420p(colorspace, color_range, chroma_bias):
    img = _picture()
    h, w = img.shape[:2]
    ref = swscale_yuv420p(img, colorspace, color_range).astype(int)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    got = rgb_to_yuv420p(x, Yuv420.for_tags(colorspace, color_range))[0].numpy().astype(int)
    assert got.shape == ref.shape == (h * 3 // 2, w)
    assert np.abs(got[:h] - ref[:h]).max() <= 1  # luma
    chroma = got[h:] - ref[h:]  # both chroma planes, in PyAV's layout
    assert np.abs(chroma).max() <= 2  # filters differ a little at sharp edges
    assert np.abs(chroma).mean() < 0.35 + chroma_bias and abs(chroma.mean() - chroma_bias) < 0.05
    if colorspace != 1:  # the matrix matters: BT.709 gives other planes for the same picture
        other = rgb_to_yuv420p(x, Yuv420.for_tags(1, color_range))[0].numpy().astype(int)
        assert np.abs(other[h:] - ref[h:]).max() > 2


def test_unknown_matrices_are_left_toswscale_yuv420p():
    assert Yuv420.for_tags(0, 1) is None  # RGB/GBR "matrix"
    assert Yuv420.for_tags(8, 1) is None  # YCgCo
    assert Yuv420.for_tags(5, 2) == Yuv420(0.299, 0.114, True)


def test_upscaler_returns_planes_of_its_rgb_output():
    up = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32")
    frames = np.stack([frame_image(i, 20, 14) for i in range(3)])
    rgb = up.upscale(frames)
    planes = up.upscale(frames, yuv=Yuv420.for_tags(1, 1))
    assert planes.shape == (3, 56 * 3 // 2, 80) and planes.dtype == np.uint8
    for i in range(3):  # the same picture: swscale's conversion of the RGB output agrees within a level or two
        assert np.abs(planes[i].astype(int) - swscale_yuv420p(rgb[i], 1, 1).astype(int)).max() <= 2
    with pytest.raises(ValueError, match="8-bit"):
        up.upscale(frames.astype(np.uint16), yuv=Yuv420.for_tags(1, 1))


def _plan(src: Path, out: Path, pix_fmt: str | None = None):
    with VideoReader(src) as r:
        return plan_output(r.info, ContainerCaps.for_path(out), scale=4, settings=EncodeSettings(pix_fmt=pix_fmt))


def _decoded(path: Path) -> np.ndarray:
    with VideoReader(path) as r:
        return np.stack([f.image for f in r if hasattr(f, "image")]).astype(int)


@pytest.mark.parametrize("colorspace", [None, 1])
def test_engine_with_device_colour_writes_the_same_video(tmp_path: Path, colorspace):
    src = make_clip(tmp_path / "in.mp4", frames=7, width=24, height=16, colorspace=colorspace)
    outs = {}
    for device_colour in (False, True):
        engine = Engine(Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32"), batch_size=3,
                        device_colour=device_colour)
        assert (engine.output_target(_plan(src, tmp_path / "o.mp4")) is not None) == device_colour
        result = engine.upscale_video(src, tmp_path / f"out{int(device_colour)}.mp4")
        assert result.frames_in == result.frames_out == 7
        outs[device_colour] = tmp_path / f"out{int(device_colour)}.mp4"
    a, b = probe(outs[False]), probe(outs[True])
    assert a["frames"] == b["frames"] == 7 and a["video_pts"] == b["video_pts"] and b["pix_fmt"] == "yuv420p"
    assert a["audio_codec"] == b["audio_codec"] == "aac"
    with av.open(str(outs[True])) as c:
        assert int(next(c.decode(video=0)).colorspace) == (colorspace or 2)
    diff = _decoded(outs[False]) - _decoded(outs[True])
    assert 10 * np.log10(255**2 / (diff**2).mean()) > 40  # the same pictures, up to rounding and x264


def test_device_colour_is_off_on_the_cpu_by_default_and_for_other_formats(tmp_path: Path):
    engine = Engine(Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32"))
    src = make_clip(tmp_path / "in.mp4", frames=2, width=16, height=16, audio=None)
    plan = _plan(src, tmp_path / "o.mp4")
    assert plan.pix_fmt == "yuv420p" and engine.output_target(plan) is None
    forced = Engine(engine.upscaler, device_colour=True)
    assert forced.output_target(_plan(src, tmp_path / "o.mp4", "yuv444p")) is None
    assert forced.output_target(plan) == Yuv420.for_tags(2, 0)

"""The streaming engine on synthetic clips: frames, sizes, audio, timing, rotation, colour, bit depth."""
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from clips import make_clip, probe
from conftest import tiny_model

from vsr.errors import VsrError
from vsr.inference import Upscaler
from vsr.pipeline import Engine

AUDIO_FRAME_S = 1024 / 48000


def _times(info: dict) -> list[float]:
    return [float(p * info["time_base"]) for p in info["video_pts"]]


def test_cfr_clip_keeps_frames_size_audio_and_pts(tmp_path: Path, engine: Engine):
    src = make_clip(tmp_path / "in.mp4", frames=14, width=32, height=24, fps=12)
    result = engine.upscale_video(src, tmp_path / "out.mp4")
    a, b = probe(src), probe(tmp_path / "out.mp4")
    assert result.frames_in == result.frames_out == a["frames"] == b["frames"] == 14
    assert (b["width"], b["height"]) == (128, 96)
    assert b["audio_codec"] == a["audio_codec"] == "aac"
    assert abs(b["audio_duration"] - a["audio_duration"]) <= AUDIO_FRAME_S
    assert np.allclose(_times(a), _times(b), atol=1e-4)
    assert b["codec"] == "h264" and b["pix_fmt"] == "yuv420p"
    assert not list(tmp_path.glob(".*vsr-tmp*"))


def test_vfr_clip_keeps_every_timestamp(tmp_path: Path, engine: Engine):
    pts = [0, 100, 150, 400, 410, 500, 800, 850, 900, 1000, 1300]
    src = make_clip(tmp_path / "vfr.mkv", frames=len(pts), vfr_pts=pts, time_base=Fraction(1, 1000),
                    audio="libopus", subtitles=True)
    engine.upscale_video(src, tmp_path / "out.mkv")
    b = probe(tmp_path / "out.mkv")
    assert b["video_pts"] == pts and b["frames"] == len(pts)
    assert ("subtitle", "srt") in b["streams"] and b["audio_codec"] == "opus"
    # into mp4 the timestamps survive a change of time base, and the subtitle that mp4 cannot hold is reported
    result = engine.upscale_video(src, tmp_path / "out.mp4")
    m = probe(tmp_path / "out.mp4")
    assert np.allclose(_times(m), [p / 1000 for p in pts], atol=1e-4)
    assert any("subtitle" in n and "not carried" in n for n in result.notes)


def test_audio_reencoded_only_when_container_cannot_hold_it(tmp_path: Path, engine: Engine):
    src = make_clip(tmp_path / "in.mp4", frames=8, audio="aac")
    result = engine.upscale_video(src, tmp_path / "out.webm")
    b = probe(tmp_path / "out.webm")
    assert b["codec"] == "vp9" and b["audio_codec"] == "opus" and b["frames"] == 8
    assert any("re-encoded" in n for n in result.notes)
    assert abs(b["audio_duration"] - probe(src)["audio_duration"]) <= 0.03


def test_ten_bit_stays_ten_bit_and_eight_bit_stays_eight(tmp_path: Path, engine: Engine):
    src = make_clip(tmp_path / "in10.mkv", frames=5, codec="libx265", pix_fmt="yuv420p10le", audio=None)
    engine.upscale_video(src, tmp_path / "out10.mkv")
    b = probe(tmp_path / "out10.mkv")
    assert b["codec"] == "hevc" and b["pix_fmt"] == "yuv420p10le" and b["frames"] == 5
    src8 = make_clip(tmp_path / "in8.mkv", frames=5, audio=None)
    engine.upscale_video(src8, tmp_path / "out8.mkv")
    assert probe(tmp_path / "out8.mkv")["pix_fmt"] == "yuv420p"


def test_rotation_colour_tags_and_odd_sizes(tmp_path: Path, engine: Engine):
    src = make_clip(tmp_path / "rot.mp4", frames=4, width=33, height=25, rotation=90, colorspace=1, audio=None,
                    codec="libx264", pix_fmt="yuv444p")
    engine.upscale_video(src, tmp_path / "out.mp4")
    b = probe(tmp_path / "out.mp4")
    assert (b["width"], b["height"]) == (132, 100) and b["rotation"] == 90
    with av.open(str(tmp_path / "out.mp4")) as c:
        frame = next(c.decode(video=0))
        assert int(frame.colorspace) == 1  # BT.709 tag carried over


def test_batch_sizes_give_the_same_frames():
    up = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32")
    frames = np.random.default_rng(0).integers(0, 256, (5, 20, 28, 3), dtype=np.uint8)
    together = up.upscale(frames)
    alone = np.concatenate([up.upscale(frames[i : i + 1]) for i in range(5)])
    assert together.shape == (5, 80, 112, 3)
    assert np.abs(together.astype(int) - alone.astype(int)).max() <= 1


def test_tiled_output_matches_untiled():
    model = tiny_model()
    frames = np.random.default_rng(1).integers(0, 256, (2, 45, 61, 3), dtype=np.uint8)
    whole = Upscaler(model, device=torch.device("cpu"), precision="fp32").upscale(frames).astype(int)
    assert 5 < whole.mean() < 250  # not saturated, so the comparison means something
    tiled = Upscaler(model, device=torch.device("cpu"), precision="fp32", tile=16, tile_overlap=16).upscale(frames)
    diff = np.abs(tiled.astype(int) - whole)
    assert diff.max() <= 1, diff.max()
    no_overlap = Upscaler(model, device=torch.device("cpu"), precision="fp32", tile=16, tile_overlap=0).upscale(frames)
    assert np.abs(no_overlap.astype(int) - whole).max() > diff.max()  # the overlap is what hides the seams


def test_memory_budget_splits_batches_and_tiles_big_frames():
    model = tiny_model()
    frames = np.random.default_rng(3).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    whole = Upscaler(model, device=torch.device("cpu"), precision="fp32", max_pixels=10**9).upscale(frames).astype(int)
    per_frame = Upscaler(model, device=torch.device("cpu"), precision="fp32", max_pixels=2100).upscale(frames)
    assert np.abs(per_frame.astype(int) - whole).max() <= 1  # 3 frames split into calls of one frame
    tiled = Upscaler(model, device=torch.device("cpu"), precision="fp32", max_pixels=900).upscale(frames)
    assert np.abs(tiled.astype(int) - whole).max() <= 1  # a frame above the budget is tiled (30 px tiles)


def test_automatic_batch_size_follows_frame_size_and_device_budget(tmp_path: Path):
    up = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32")
    auto = Engine(up)  # batch_size 0 = automatic
    assert (auto.batch_for(144, 180), auto.batch_for(24, 32), auto.batch_for(540, 960)) == (2, 16, 1)
    assert Engine(Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32", max_pixels=2000)).batch_for(24, 32) == 2
    assert Engine(up, batch_size=3).batch_for(24, 32) == 3  # an explicit size wins
    src = make_clip(tmp_path / "in.mp4", frames=20, width=32, height=24)
    result = auto.upscale_video(src, tmp_path / "out.mp4")
    assert result.batch_size == 16 and result.frames_in == result.frames_out == 20
    with pytest.raises(VsrError, match="batch-size"):
        Engine(up, batch_size=-1)


def test_sixteen_bit_frames_round_trip_through_the_upscaler():
    up = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32")
    f16 = np.random.default_rng(2).integers(0, 65536, (1, 8, 8, 3), dtype=np.uint16)
    out16 = up.upscale(f16)
    out8 = up.upscale((f16 // 257).astype(np.uint8))
    assert out16.dtype == np.uint16 and out16.shape == (1, 32, 32, 3)
    assert np.abs(out16 / 257.0 - out8).max() < 2.0


def _lag_of(eng: Engine, src: Path, tmp_path: Path, monkeypatch) -> tuple[int, int]:
    """(most frames decoded but not yet encoded at any moment, frames written), with a model slower than the decoder."""
    from vsr.video import VideoReader

    written, lag = [0], [0]
    real_to_frame, real_upscale = VideoReader._to_frame, eng.upscaler.upscale

    def to_frame(self, index, vf):
        lag[0] = max(lag[0], index + 1 - written[0])
        return real_to_frame(self, index, vf)

    def slow_upscale(frames, **kw):
        time.sleep(0.01)
        return real_upscale(frames, **kw)

    monkeypatch.setattr(VideoReader, "_to_frame", to_frame)
    monkeypatch.setattr(eng.upscaler, "upscale", slow_upscale)
    result = eng.upscale_video(src, tmp_path / f"out{eng.queue_frames}.mp4",
                               progress=lambda n: written.__setitem__(0, written[0] + n))
    return lag[0], result.frames_out


def test_queues_bound_the_frames_in_flight(tmp_path: Path, monkeypatch):
    """However long the clip, the decoder runs at most the queues' depth ahead of the encoder."""
    up = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32")
    src = make_clip(tmp_path / "long.mp4", frames=160, width=32, height=24, audio=None)
    batch = 4
    depth = 2 * batch + 2  # the engine's default queue depth
    bound = 2 * depth + batch + 3  # both queues full, a batch being filled, one frame in each thread's hands
    lag, n = _lag_of(Engine(up, batch_size=batch), src, tmp_path, monkeypatch)
    assert n == 160 and lag <= bound, (lag, bound)
    # the negative control: with queues too deep to fill, the decoder runs far ahead of the model
    lag, n = _lag_of(Engine(up, batch_size=batch, queue_frames=10_000), src, tmp_path, monkeypatch)
    assert n == 160 and lag > 2 * bound, lag  # measured: 18 bounded, 140 unbounded (bound 27)


class _Bicubic(torch.nn.Module):
    """A stand-in generator whose output follows its input closely (a random-init SRResNet's is nearly flat grey)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False) * 2 - 1


@pytest.mark.parametrize("kind", ["8-bit", "10-bit", "full-range"])
def test_output_frames_are_the_upscalers_output_on_the_decoded_frames(tmp_path: Path, kind: str):
    """Through the whole video path (decode, batch, model, colour conversion, encode) frame i out is the
    Upscaler's output on decoded frame i: order, channel order, matrix and range survive. Lossless FFV1 4:4:4 out."""
    from vsr.video import EncodeSettings, Frame, VideoReader

    clip = {"8-bit": dict(colorspace=1),
            "10-bit": dict(codec="libx265", pix_fmt="yuv420p10le", colorspace=9),
            "full-range": dict(colorspace=1, color_range=2)}[kind]
    src = make_clip(tmp_path / "in.mkv", frames=7, width=24, height=16, audio=None, **clip)
    out_fmt = "yuv444p10le" if kind == "10-bit" else "yuv444p"
    up = Upscaler(_Bicubic(), device=torch.device("cpu"), precision="fp32")
    Engine(up, batch_size=3, settings=EncodeSettings(codec="ffv1", pix_fmt=out_fmt)).upscale_video(src, tmp_path / "out.mkv")
    with VideoReader(src) as r:
        decoded = np.stack([f.image for f in r if isinstance(f, Frame)])
        tags = r.info.colour
    with VideoReader(tmp_path / "out.mkv") as r:
        out = np.stack([f.image for f in r if isinstance(f, Frame)]).astype(np.float64)
        assert r.info.colour == tags  # matrix and range tags carried
    want = up.upscale(decoded).astype(np.float64)
    assert out.shape == want.shape == (7, 64, 96, 3) and out.dtype == want.dtype
    peak = 65535.0 if decoded.dtype == np.uint16 else 255.0
    assert (decoded.dtype == np.uint16) == (kind == "10-bit")
    err = np.abs(out - want) * 255.0 / peak  # in 8-bit levels
    # YUV 4:4:4 rounding of RGB: 8-bit within 2 levels, mean under 0.5 (full range 0.7: swscale rounds its chroma
    # half a level low there, vsr/colour.py); 10-bit within 0.6 of an 8-bit level, mean under 0.2
    tol, mean_tol = {"8-bit": (2.0, 0.5), "10-bit": (0.6, 0.2), "full-range": (2.0, 0.75)}[kind]
    assert err.max() <= tol and err.mean() < mean_tol, (err.max(), err.mean())
    # what a wrong order, channel order or range would give: far outside the tolerance
    assert (np.abs(out[1:] - want[:-1]) * 255.0 / peak).mean() > 5 * tol
    assert (np.abs(out - want[..., ::-1]) * 255.0 / peak).mean() > 5 * tol
    squeezed = (want / peak * 219 + 16) / 255 * peak  # full range read as limited
    assert (np.abs(out - squeezed) * 255.0 / peak).max() > 5 * tol


def _x264_subme(path: Path) -> int:
    """x264's motion-search level from the settings string it writes into the first packet."""
    with av.open(str(path)) as c:
        first = bytes(next(p for p in c.demux(video=0) if p.size))
    settings = first[first.index(b"x264 - core"):]
    return int(settings.split(b"subme=")[1].split(b" ")[0])


def test_faster_x264_preset_only_where_the_encoder_is_the_bottleneck(tmp_path: Path):
    from vsr.video import EncodeSettings, encoder_defaults

    assert encoder_defaults("libx264") == (18, "preset", "medium")
    assert encoder_defaults("libx264", encoder_bound=True) == (18, "preset", "veryfast")
    assert encoder_defaults("libx265", encoder_bound=True) == encoder_defaults("libx265")
    src = make_clip(tmp_path / "in.mp4", frames=3, width=32, height=24)
    subme = {}
    for bound in (False, True):
        up = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32")
        out = tmp_path / f"out_{bound}.mp4"
        Engine(up, settings=EncodeSettings(encoder_bound=bound)).upscale_video(src, out)
        subme[bound] = _x264_subme(out)
    assert subme == {False: 7, True: 2}  # x264's medium and veryfast presets


def test_demux_error_under_skip_corrupt_keeps_the_frames_the_threaded_decoder_holds(tmp_path: Path, monkeypatch):
    from vsr.video import Frame, VideoReader

    src = make_clip(tmp_path / "in.mp4", frames=20, width=32, height=24, audio=None)
    real = VideoReader._packets

    def packets_then_error(self):  # 12 video packets, then the demuxer fails as on a damaged file
        for n, packet in enumerate(real(self)):
            if n == 12:
                raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
            yield packet

    monkeypatch.setattr(VideoReader, "_packets", packets_then_error)
    with VideoReader(src, skip_corrupt=True, threads=4) as r:  # frame threads: the decoder holds ~3 frames back
        frames = [f.index for f in r if isinstance(f, Frame)]
    assert frames == list(range(12)) and r.corrupt_packets == 1
    with pytest.raises(VsrError, match="cannot read past video frame"), VideoReader(src, threads=4) as r:
        list(r)

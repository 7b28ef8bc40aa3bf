"""The flow-fused video model: DIS flow and the warp recover a known shift, the first frame (and alpha 0) is the
SRResNet exactly, the blend averages noise away on a noisy static clip, streaming equals the whole-sequence loop
in any chunking, a scene cut restarts it, and the weights file and the engine treat it as a temporal model."""
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clips import make_clip
from conftest import tiny_model
from torch import nn

from vsr.inference import Upscaler
from vsr.models.flowfuse import FlowFusedSRResNet, dis_flow, from_srresnet, warp
from vsr.models.recurrent import Unrolled, scene_cut
from vsr.pipeline import Engine
from vsr.video import EncodeSettings, VideoReader
from vsr.weights import TRAINABLE_ARCHS, load, save

CPU = torch.device("cpu")


def _texture(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A (h, w, 3) uint8 picture with detail at every scale: smoothed noise, so optical flow has something to track."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((1, 3, h // 4 + 2, w // 4 + 2), dtype=np.float32))
    x = F.interpolate(x, size=(h + 8, w + 8), mode="bicubic", align_corners=False)[0, :, 4:-4, 4:-4]
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def _panning(n_frames: int, w: int = 48, h: int = 40, step: int = 2, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a window moving ``step`` px a frame to the right over one textured picture."""
    world = _texture(w + step * n_frames, h, seed)
    return np.stack([world[:, i * step: i * step + w] for i in range(n_frames)])


def _reference(model: nn.Module, clips: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 255.0
    with torch.no_grad():
        y = Unrolled(model)(x)
    return ((y + 1) / 2).clamp(0, 1).mul(255).round().permute(0, 1, 3, 4, 2).to(torch.uint8).numpy()


def _stream(up: Upscaler, clips: np.ndarray, state=None, **kw):
    outs = []
    for t in range(clips.shape[1]):
        out, state = up.upscale_stream(clips[:, t], state, **kw)
        outs.append(out)
    return np.stack(outs, axis=1), state


class _Bicubic(nn.Module):
    """A stand-in core whose output is known: bicubic x4, mapped to [-1, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False) * 2 - 1


def test_dis_flow_and_warp_recover_a_known_shift():
    frames = _panning(2, 64, 48, step=3)
    y = [np.ascontiguousarray(f[..., 1]) for f in frames]
    flow = dis_flow(y[1], y[0])  # frame 1 at x is frame 0 at x + 3
    inner = flow[8:-8, 8:-8]
    assert abs(float(np.median(inner[..., 0])) - 3.0) < 0.25 and abs(float(np.median(inner[..., 1]))) < 0.25
    prev = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float()
    cur = torch.from_numpy(frames[1]).permute(2, 0, 1)[None].float()
    const = torch.zeros(1, 2, 48, 64)
    const[:, 0] = 3.0
    back = warp(prev, const)
    assert (back[..., :-3] - cur[..., :-3]).abs().max() < 1e-3  # a whole-pixel warp moves pixels (to rounding)
    assert (warp(prev, torch.zeros(1, 2, 48, 64)) - cur)[..., :-3].abs().mean() > 5  # the negative control


@pytest.mark.parametrize("shape", [(1, 1), (6, 7), (11, 30), (12, 40), (15, 200), (40, 13), (13, 13)])
def test_the_flow_takes_frames_of_any_size(shape: tuple[int, int]):
    """DIS refuses frames under 12 px on both sides and crashed the process on some 12-15 px high wide ones."""
    h, w = shape
    a = np.random.default_rng(0).integers(0, 256, (h, w), dtype=np.uint8)
    flow = dis_flow(a, a)
    assert flow.shape == (h, w, 2) and np.isfinite(flow).all() and np.abs(flow).max() < 0.5  # a still: no motion
    model = from_srresnet(tiny_model(1)).eval()
    x = torch.from_numpy(a).float().div(255).expand(3, h, w)[None]
    with torch.no_grad():
        out, state = model(x, None)
        out, _ = model(x, state)
    assert out.shape == (1, 3, 4 * h, 4 * w)


def test_first_frame_and_alpha_zero_are_the_srresnet():
    base = tiny_model(2)
    clip = torch.from_numpy(_panning(4, 24, 20)).permute(0, 3, 1, 2).float()[:, None] / 255.0
    off, on = from_srresnet(base, alpha=0.0).eval(), from_srresnet(base, alpha=0.8).eval()
    s_off = s_on = None
    with torch.no_grad():
        for t, x in enumerate(clip):
            a, s_off = off(x, s_off)
            b, s_on = on(x, s_on)
            assert torch.equal(a, base(x).clamp(-1, 1))
            if t == 0:
                assert torch.equal(b, base(x).clamp(-1, 1))
        assert (b - base(x)).abs().max() > 1e-3  # later frames do blend


@pytest.mark.parametrize("step", [0, 2])
def test_the_blend_averages_away_noise_that_changes_from_frame_to_frame(step: int):
    """A clip (still, or panning 2 px a frame) with fresh noise in every frame, through a known core (bicubic):
    blending the warped previous output brings later frames closer to the clean frame's output. With motion
    this needs the flow: an unaligned previous output is distrusted or blurs."""
    clean = _panning(8, 40, 32, step=step, seed=3).astype(np.float32)
    rng = np.random.default_rng(1)
    noisy = np.clip(clean + rng.normal(0, 4, clean.shape), 0, 255).round().astype(np.uint8)
    model = FlowFusedSRResNet(num_blocks=1, channels=8, alpha=0.5, sigma=8.0).eval()
    model.core = _Bicubic()
    per_frame = FlowFusedSRResNet(num_blocks=1, channels=8, alpha=0.0).eval()
    per_frame.core = _Bicubic()
    target = _Bicubic()(torch.from_numpy(clean).permute(0, 3, 1, 2) / 255.0)[..., 8:-8, 8:-8]  # away from the edges
    fused_err, plain_err = _errors(model, noisy, target), _errors(per_frame, noisy, target)
    assert fused_err[0] == pytest.approx(plain_err[0])  # frame 0 has nothing to blend
    assert np.mean(fused_err[3:]) < 0.8 * np.mean(plain_err[3:])  # later ones average several frames' noise


def _errors(model: nn.Module, frames: np.ndarray, target: torch.Tensor) -> list[float]:
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[:, None] / 255.0
    state, errs = None, []
    with torch.no_grad():
        for f, want in zip(x, target):
            out, state = model(f, state)
            errs.append(float((out[0, :, 8:-8, 8:-8] - want).pow(2).mean()))
    return errs


@pytest.mark.parametrize("splits", [(7,), (1, 6), (3, 4), (2, 3, 2)])
def test_streaming_equals_the_whole_sequence_loop_in_any_chunks(splits: tuple[int, ...]):
    model = from_srresnet(tiny_model(1), alpha=0.6).eval()
    clips = np.stack([_panning(7, seed=0), _panning(7, step=1, seed=5)])
    x = torch.from_numpy(clips[0]).permute(0, 3, 1, 2).float() / 255
    assert not scene_cut(x[:-1], x[1:]).any()
    ref = _reference(model, clips)
    parts, state, t = [], None, 0
    for k in splits:
        out, state = _stream(Upscaler(model, device=CPU, fuse=False), clips[:, t:t + k], state)
        parts.append(out)
        t += k
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), ref)
    fused, _ = _stream(Upscaler(model, device=CPU), clips)  # the folded core rounds the last 1e-6 differently
    assert np.abs(fused.astype(int) - ref).max() <= 1
    fresh = np.stack([Upscaler(model, device=CPU, fuse=False).upscale_stream(clips[:, i], None)[0]
                      for i in range(7)], axis=1)
    assert np.abs(fresh[:, 1:].astype(int) - ref[:, 1:]).max() > 2  # the state matters


def test_a_scene_cut_restarts_the_blend():
    model = from_srresnet(tiny_model(4), alpha=0.8).eval()
    a = _panning(3, seed=0)
    b = (255 - _panning(3, seed=9)) // 4  # other content, far away in luma histogram
    up = Upscaler(model, device=CPU, fuse=False)
    got, _ = _stream(up, np.concatenate([a, b])[None])
    fresh_b, _ = _stream(up, b[None])
    np.testing.assert_array_equal(got[:, 3:], fresh_b)
    blind, _ = _stream(up, np.concatenate([a, b])[None], detect_cuts=False)
    assert np.abs(blind[:, 3].astype(int) - fresh_b[:, 0]).max() > 2  # negative control


def test_weights_file_round_trip_and_it_is_not_trainable(tmp_path: Path):
    model = from_srresnet(tiny_model(7), alpha=0.3, sigma=5.0, preset="fast").eval()
    loaded = load(str(save(model, tmp_path / "flow.pt", meta={"name": "flow"})))
    d = loaded.descriptor
    assert (d.arch, d.temporal, d.tiling) == ("flow-srresnet", True, False)
    assert d.params == {"num_blocks": 2, "channels": 16, "scale": 4, "alpha": 0.3, "sigma": 5.0, "preset": "fast"}
    x = torch.from_numpy(_panning(2)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        s1 = s2 = None
        for f in x:
            o1, s1 = loaded.model(f[None], s1)
            o2, s2 = model(f[None], s2)
            assert torch.equal(o1, o2)
    assert "flow-srresnet" not in TRAINABLE_ARCHS
    with pytest.raises(ValueError, match="alpha"):
        FlowFusedSRResNet(alpha=1.5)


def test_the_engine_runs_it_over_a_video_with_sound(tmp_path: Path):
    src = make_clip(tmp_path / "in.mkv", frames=14, fps=10, audio="aac", width=32, height=24)
    up = Upscaler(from_srresnet(tiny_model(), alpha=0.5).eval(), device=CPU, precision="fp32")
    engine = Engine(up, batch_size=2, segment_seconds=0.6, settings=EncodeSettings(codec="ffv1", pix_fmt="bgr0"))
    res = engine.upscale_video(src, tmp_path / "out.mkv")
    assert res.frames_out == 14
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert any(p.size for p in c.demux(audio=0))  # the sound is kept
    with VideoReader(tmp_path / "out.mkv") as r:
        assert (r.info.width, r.info.height) == (128, 96)

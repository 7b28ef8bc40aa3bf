"""The recurrent generator: step 0 is SRResNet exactly, streaming through the Upscaler equals a reference loop,
chunks with the state passed along change nothing, scene cuts and size changes reset, and the weights file
says it is temporal."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from clips import frame_image
from conftest import tiny_model
from conftest import tiny_temporal as _temporal
from typer.testing import CliRunner

from vsr.cli import app
from vsr.errors import VsrError
from vsr.inference import Upscaler
from vsr.models.fused import fuse_for_inference
from vsr.models.recurrent import RecurrentSRResNet, Unrolled, from_srresnet, reset_where, scene_cut
from vsr.weights import SHIPPED, load, save

CPU = torch.device("cpu")


def _clip(n_frames: int, w: int = 11, h: int = 9, shift: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a window panning one pixel a frame over a smooth pattern (no scene cut in it)."""
    world = frame_image(shift, w + n_frames, h + n_frames)
    return np.stack([world[i:i + h, i:i + w] for i in range(n_frames)])


def _other_clip(n_frames: int, w: int = 11, h: int = 9) -> np.ndarray:
    """Different content: a dark, inverted, transposed version of the pattern (far away in luma histogram)."""
    big = _clip(n_frames, h, w)
    return (255 - big.transpose(0, 2, 1, 3)) // 4


def _reference(model: RecurrentSRResNet, clips: np.ndarray) -> np.ndarray:
    """The whole-sequence loop in float: (N, T, H, W, 3) uint8 -> (N, T, 4H, 4W, 3) uint8."""
    x = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 255.0
    with torch.no_grad():
        y = Unrolled(model)(x)
    return ((y + 1) / 2).clamp(0, 1).mul(255).round().permute(0, 1, 3, 4, 2).to(torch.uint8).numpy()


def _stream(up: Upscaler, clips: np.ndarray, state=None, **kw) -> tuple[np.ndarray, tuple]:
    outs = []
    for t in range(clips.shape[1]):
        out, state = up.upscale_stream(clips[:, t], state, **kw)
        outs.append(out)
    return np.stack(outs, axis=1), state


def test_from_srresnet_equals_srresnet_on_every_frame():
    base = tiny_model(3)
    rec = from_srresnet(base).eval()
    frames = torch.rand(5, 2, 3, 9, 13)  # unrelated frames: the state differs at every step
    state = None
    with torch.no_grad():
        for x in frames:
            out, state = rec(x, state)
            assert torch.equal(out, base(x))
    moved = _temporal(3)  # the negative control: a trained temporal conv does change the output
    with torch.no_grad():
        out, state = moved(frames[0], None)
        assert (moved(frames[1], state)[0] - base(frames[1])).abs().max() > 1e-3
    ups = (Upscaler(base, device=CPU), Upscaler(rec, device=CPU))  # both fused, as vsr runs them
    clip = _clip(4)
    np.testing.assert_array_equal(_stream(ups[1], clip[None])[0][0], ups[0].upscale(clip))


@pytest.mark.skipif(not SHIPPED["srresnet-mse"].path.is_file(), reason="shipped weights not present")
def test_warm_start_from_the_shipped_srresnet_mse_is_exact():
    base = load("srresnet-mse").model
    rec = from_srresnet(base).eval()
    clip = torch.from_numpy(_clip(3, 24, 20)).permute(0, 3, 1, 2).float()[:, None] / 255.0
    state = None
    with torch.no_grad():
        for x in clip:
            out, state = rec(x, state)
            assert (out - base(x)).abs().max().item() < 1e-6


@pytest.mark.parametrize("fuse", [False, True])
def test_streaming_equals_the_whole_sequence_loop(fuse: bool):
    model = _temporal()
    clips = np.stack([_clip(6), _clip(6, shift=40)])  # two independent streams
    for clip in clips:
        x = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255
        assert not scene_cut(x[:-1], x[1:]).any()  # no cut between consecutive frames
    ref = _reference(model, clips)
    got, _ = _stream(Upscaler(model, device=CPU, fuse=fuse), clips)
    diff = np.abs(got.astype(int) - ref).max()
    assert diff == 0 if not fuse else diff <= 1  # the fused core may round the last 1e-6 differently
    # the state matters: frame by frame without it (every frame a fresh start) is not the same
    fresh = np.stack([Upscaler(model, device=CPU, fuse=fuse).upscale_stream(clips[:, t], None)[0]
                      for t in range(6)], axis=1)
    assert np.abs(fresh[:, 1:].astype(int) - ref[:, 1:]).max() > 2


@pytest.mark.parametrize("splits", [(1, 6), (3, 4), (2, 3, 2)])
def test_chunks_with_the_state_passed_along_give_identical_outputs(splits: tuple[int, ...]):
    model = _temporal(1)
    clips = np.stack([_clip(7), _clip(7, shift=9)])
    whole, _ = _stream(Upscaler(model, device=CPU), clips)
    parts, state, t = [], None, 0
    for k in splits:
        up = Upscaler(model, device=CPU)  # a new upscaler per chunk: all that carries over is the state
        out, state = _stream(up, clips[:, t:t + k], state)
        parts.append(out)
        t += k
    np.testing.assert_array_equal(np.concatenate(parts, axis=1)[:, :t], whole[:, :t])


def test_streams_in_one_call_equal_streams_run_apart():
    model = _temporal(2)
    clips = np.stack([_clip(4), _clip(4, shift=17), _clip(4, shift=33)])
    together, _ = _stream(Upscaler(model, device=CPU, fuse=False), clips)
    one_per_call, _ = _stream(Upscaler(model, device=CPU, fuse=False, max_pixels=11 * 9), clips)  # 1 stream a call
    apart = np.concatenate([_stream(Upscaler(model, device=CPU, fuse=False), clips[i:i + 1])[0] for i in range(3)])
    assert np.abs(one_per_call.astype(int) - together).max() <= 1
    assert np.abs(apart.astype(int) - together).max() <= 1


def test_a_scene_cut_restarts_the_stream():
    model = _temporal(4)
    a, b = _clip(3), _other_clip(3)
    seq = np.concatenate([a, b])[None]
    up = Upscaler(model, device=CPU, fuse=False)
    got, _ = _stream(up, seq)
    fresh_b, _ = _stream(up, b[None])
    np.testing.assert_array_equal(got[:, 3:], fresh_b)
    blind, _ = _stream(up, seq, detect_cuts=False)  # negative control: without the reset, the old state leaks in
    assert np.abs(blind[:, 3].astype(int) - fresh_b[:, 0]).max() > 2


def test_scene_cut_rule_is_per_stream():
    a, b = _clip(2, 40, 30), _other_clip(2, 40, 30)
    t = lambda arr: torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    prev = t(np.stack([a[0], a[0]]))
    now = t(np.stack([a[1], b[0]]))  # stream 0 moves on, stream 1 cuts to other content
    assert scene_cut(prev, now).tolist() == [False, True]
    assert scene_cut(prev, now[..., :20]).tolist() == [True, True]  # another size is always a cut
    model = _temporal()
    with torch.no_grad():
        _, state = model(prev, None)
    reset = reset_where(state, torch.tensor([False, True]), now)
    fresh = model.initial_state(now)
    for s, r, f in zip(state, reset, fresh):
        assert torch.equal(r[0], s[0]) and torch.equal(r[1], f[1])


def test_a_new_frame_size_restarts_and_a_wrong_state_is_refused():
    model = _temporal(5)
    up = Upscaler(model, device=CPU, fuse=False)
    _, state = _stream(up, _clip(2)[None])
    other = _clip(2, 13, 10)[None]
    got, _ = _stream(up, other, state)
    np.testing.assert_array_equal(got, _stream(up, other)[0])
    with pytest.raises(ValueError, match="holds 1 stream"):
        up.upscale_stream(np.concatenate([other[:, 0]] * 2), state)
    with torch.no_grad(), pytest.raises(ValueError, match="start a fresh state"):
        model(torch.rand(1, 3, 10, 13), state)


def test_lanes_join_and_leave_and_each_gets_its_own_stream():
    """Streams with states kept apart (segments side by side): each stream's pictures are those it gets alone,
    whoever shares its calls and whenever it joins; a state of another frame size restarts that stream alone."""
    model = _temporal(8)
    up = Upscaler(model, device=CPU, fuse=False)
    clips = {"a": _clip(6), "b": _clip(3, shift=21), "c": _clip(3, shift=50)}
    joins = {"a": 0, "b": 2, "c": 3}  # the call at which each stream joins; it leaves after its last frame
    states: dict[str, tuple | None] = {k: None for k in clips}
    got: dict[str, list[np.ndarray]] = {k: [] for k in clips}
    sizes = []
    for t in range(6):
        live = [k for k in clips if joins[k] <= t < joins[k] + len(clips[k])]
        out, new = up.upscale_lanes(np.stack([clips[k][t - joins[k]] for k in live]), [states[k] for k in live])
        sizes.append(len(live))
        for k, y, st in zip(live, out, new):
            got[k].append(y)
            states[k] = st
    assert sizes == [1, 1, 2, 3, 3, 2]
    for k, clip in clips.items():
        alone, _ = _stream(up, clip[None])
        assert np.abs(np.stack(got[k]).astype(int) - alone[0]).max() <= 1, k
        assert np.abs(np.stack(got[k])[1:].astype(int) - _stream(up, clip[1:][None])[0][0]).max() > 2  # state used
    other = _clip(2, 13, 10)  # stream a's state does not fit this size: a restarts; d is fresh
    out, _ = up.upscale_lanes(np.stack([other[0], other[1]]), [states["a"], None])
    fresh, _ = _stream(up, other[:, None])
    assert np.abs(out.astype(int) - fresh[:, 0]).max() <= 1
    with pytest.raises(ValueError, match="2 state"):
        up.upscale_lanes(other[:1], [None, None])


def _window(seed: int = 0, window: int = 3) -> RecurrentSRResNet:
    """A tiny sliding-window model (nothing fed back) whose temporal conv is not zero."""
    rec = from_srresnet(tiny_model(seed), window=window, feedback=False).eval()
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # strong enough that a one-pixel pan of the past frames shows
        rec.temporal.weight.normal_(0.0, 0.5)
    return rec


def test_the_sliding_window_starts_as_srresnet_and_sees_only_its_window():
    """window-srresnet: step 0 is the SRResNet exactly; trained, frame t's picture depends on frames t-2..t
    alone (a stream started two frames early gives the same picture: nothing older leaks in, so no drift)."""
    base = tiny_model(9)
    plain = from_srresnet(base, window=3, feedback=False).eval()
    assert plain.arch == "window-srresnet" and plain.state_channels == (6, 0, 0) and plain.to_hidden is None
    frames = torch.rand(4, 2, 3, 9, 13)
    state = None
    with torch.no_grad():
        for x in frames:
            out, state = plain(x, state)
            assert torch.equal(out, base(x))
    up = Upscaler(_window(9), device=CPU, fuse=False)
    clip = _clip(7)[None]
    whole, _ = _stream(up, clip)
    for t in range(2, 7):
        late, _ = _stream(up, clip[:, t - 2:t + 1])
        np.testing.assert_array_equal(late[:, -1], whole[:, t])
    one_back, _ = _stream(up, clip[:, 3:5])  # a window of two frames is not the same picture: t-2 matters
    assert np.abs(one_back[:, -1].astype(int) - whole[:, 4]).max() > 0
    fresh, _ = _stream(up, clip[:, 4:5])
    assert np.abs(fresh[:, 0].astype(int) - whole[:, 4]).max() > 2  # the past frames change the picture
    with pytest.raises(ValueError, match="hidden must be"):
        RecurrentSRResNet(num_blocks=1, channels=8, hidden=4, feedback=False)


def test_the_sliding_window_restarts_at_a_cut_and_round_trips(tmp_path: Path):
    up = Upscaler(_window(10), device=CPU, fuse=False)
    a, b = _clip(3), _other_clip(3)
    got, _ = _stream(up, np.concatenate([a, b])[None])
    np.testing.assert_array_equal(got[:, 3:], _stream(up, b[None])[0])
    blind, _ = _stream(up, np.concatenate([a, b])[None], detect_cuts=False)
    assert np.abs(blind[:, 3].astype(int) - got[:, 3]).max() > 2
    loaded = load(str(save(_window(10), tmp_path / "win.pt", meta={"name": "win"})))
    d = loaded.descriptor
    assert (d.arch, d.temporal, d.tiling, d.params["window"], d.params["feedback"]) == ("window-srresnet", True, False, 3, False)
    out, _ = _stream(Upscaler(loaded.model, device=CPU, fuse=False), a[None])
    np.testing.assert_array_equal(out, _stream(up, a[None])[0])


def test_temporal_models_refuse_the_image_calls_and_tiles():
    model = _temporal()
    up = Upscaler(model, device=CPU)
    with pytest.raises(VsrError, match="upscale_stream"):
        up.upscale(_clip(1))
    with pytest.raises(VsrError, match="cannot run on tiles .its state spans whole frames"):
        Upscaler(model, device=CPU, tile=8)
    with pytest.raises(VsrError, match="not a temporal model"):
        Upscaler(tiny_model(), device=CPU).upscale_stream(_clip(1), None)


def test_stills_are_fresh_one_frame_streams_and_an_image_uses_them(tmp_path: Path):
    """Unrelated pictures (an image, a request's instances) through a temporal model: each is a stream of one
    frame from a fresh state, nothing passes between them; for a single-frame model it is ``upscale``."""
    up = Upscaler(_temporal(3), device=CPU)
    frames = _clip(4)
    stills = up.upscale_stills(frames)
    fresh = np.stack([_stream(up, f[None, None])[0][0, 0] for f in frames])
    assert np.abs(stills.astype(int) - fresh).max() <= 1
    streamed = _stream(up, frames[None])[0][0]  # the same frames as one stream: the state changes them
    assert np.abs(streamed[1:].astype(int) - stills[1:]).max() > 3
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    floats = up.run_stills(x).permute(0, 2, 3, 1).mul(255).round().numpy()
    assert floats.shape == stills.shape and np.abs(floats - stills).max() <= 1
    single = Upscaler(tiny_model(), device=CPU)
    np.testing.assert_array_equal(single.upscale_stills(frames), single.upscale(frames))
    weights = save(_temporal(3), tmp_path / "rec.pt", meta={"name": "rec"})
    cv2.imwrite(str(tmp_path / "a.png"), frames[2][..., ::-1])
    res = CliRunner().invoke(app, ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--weights",
                                   str(weights), "--device", "cpu", "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    out = cv2.imread(str(tmp_path / "b.png"))[..., ::-1]
    assert np.abs(out.astype(int) - fresh[2]).max() <= 1


def test_fused_recurrent_matches_and_leaves_the_original_alone():
    model = _temporal(6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_inference(model)
    assert isinstance(fused, RecurrentSRResNet) and fused is not model
    x = torch.rand(2, 3, 9, 7)
    with torch.no_grad():
        (a, sa), (b, sb) = model(x, None), fused(x, None)
        assert (a - b).abs().max() < 1e-5
        assert (model(x, sa)[0] - fused(x, sb)[0]).abs().max() < 1e-5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_weights_file_round_trip_says_temporal(tmp_path: Path):
    model = _temporal(7)
    path = save(model, tmp_path / "rec.pt", meta={"name": "rec"})
    loaded = load(str(path))
    d = loaded.descriptor
    assert (d.arch, d.temporal, d.tiling) == ("recurrent-srresnet", True, False)
    assert d.params == {"num_blocks": 2, "channels": 16, "scale": 4, "hidden": 32, "temporal_kernel": 3, "window": 2,
                        "feedback": True}
    assert isinstance(loaded.model, RecurrentSRResNet)
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(loaded.model(x, None)[0], model(x, None)[0])
    plain = load(str(save(tiny_model(), tmp_path / "plain.pt", meta={"name": "plain"}))).descriptor
    assert plain.temporal is False
    res = CliRunner().invoke(app, ["models", str(path)])
    assert res.exit_code == 0 and "recurrent-srresnet x4" in res.output and "temporal: yes" in res.output
    assert "temporal" not in CliRunner().invoke(app, ["models", str(tmp_path / "plain.pt")]).output

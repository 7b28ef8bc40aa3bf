"""Training the recurrent generator: synthetic sequences and real clips, the exact warm start from an SRResNet file, learning,
resume, validation on clips, export to a temporal weights file, and clear refusals."""
import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from clips import frame_image, make_clip
from typer.testing import CliRunner

from vsr.cli import app
from vsr.config import TrainConfig
from vsr.data import degrade_bicubic, load_images
from vsr.degrade import parse_degradation
from vsr.errors import DataError, VsrError, WeightsError
from vsr.inference import Upscaler
from vsr.models import RecurrentSRResNet, SRResNet
from vsr.sequences import Motion, SequenceSampler, clip_sources, load_clip
from vsr.trainer import export, load_val_clips, resume_config, train
from vsr.weights import DEFAULT_PARAMS, load, save


def _images(folder: Path, n: int = 3, size: tuple[int, int] = (44, 40)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), frame_image(5 * i, *size))
    return folder


def _cfg(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(data=[str(_images(tmp_path / "hr"))], out=str(tmp_path / "run"), arch="recurrent-srresnet", seq_len=3,
                steps=4, batch_size=2, crop=16, lr=1e-3, lr_min=1e-3, precision="fp32", device="cpu", val_every=0,
                ckpt_every=2, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def _log(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _stills(tmp_path: Path) -> list[torch.Tensor]:
    return load_images(sorted(_images(tmp_path / "still", n=2, size=(64, 56)).glob("*.png")))


def test_sequences_move_are_seeded_and_degrade_every_frame(tmp_path: Path):
    images = _stills(tmp_path)
    sampler = SequenceSampler(images, crop=16, frames=4)
    lr, hr = sampler.sample(3, seed=7)
    assert lr.shape == (3, 4, 3, 4, 4) and hr.shape == (3, 4, 3, 16, 16)
    assert hr.min() >= -1 and hr.max() <= 1 and lr.min() >= 0 and lr.max() <= 1
    lr2, hr2 = sampler.sample(3, seed=7)
    assert torch.equal(lr, lr2) and torch.equal(hr, hr2)  # a resumed run sees the same sequences
    assert not torch.equal(sampler.sample(3, seed=8)[1], hr)
    assert all((hr[:, k] - hr[:, 0]).abs().mean() > 0.01 for k in (1, 2, 3))  # the camera moves
    hr8 = ((hr + 1) * 127.5).round().to(torch.uint8)
    torch.testing.assert_close(lr, degrade_bicubic(hr8.flatten(0, 1)).reshape(lr.shape).float() / 255)  # BI, per frame
    still = SequenceSampler(images, crop=16, frames=3, motion=Motion(shift=0, zoom=0, rotation=0, jitter=0))
    _, hs = still.sample(2, seed=1)
    assert torch.equal(hs[:, 0], hs[:, 2])  # the negative control: no motion, no change
    jpeg = SequenceSampler(images, crop=16, frames=3,
                           degradation=parse_degradation("real:clean_prob=0,blur_prob=0,noise_prob=0,jpeg_prob=1,"
                                                         "codec_prob=0,jpeg_q=10:10"))
    lj, hj = jpeg.sample(2, seed=3)
    bic = degrade_bicubic(((hj + 1) * 127.5).round().to(torch.uint8).flatten(0, 1)).float().reshape(lj.shape) / 255
    assert all((lj[:, k] - bic[:, k]).abs().max() > 0.02 for k in range(3))  # JPEG on every frame, not just the last
    with pytest.raises(DataError, match="smaller than the"):
        SequenceSampler(images, crop=48, frames=8)


def _clip_folder(folder: Path, frames: int = 6, size: tuple[int, int] = (40, 36)) -> Path:
    """A clip whose frame i is one texture plus 20 * i: any window of it, cut in place, has constant steps of +-20."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 50, size=(size[1], size[0], 3), dtype=np.uint8)
    for i in range(frames):
        cv2.imwrite(str(folder / f"im{i + 1}.png"), base + np.uint8(20 * i))
    return folder


def test_clip_windows_are_consecutive_frames_cut_in_place(tmp_path: Path):
    clips = tmp_path / "clips"
    _clip_folder(clips / "a" / "0001", frames=11)  # im1 .. im11: natural order, not im1, im10, im11, im2
    _clip_folder(clips / "b", frames=4, size=(36, 40))
    found = clip_sources([clips])
    assert found == [clips / "a" / "0001", clips / "b"]
    loaded = [load_clip(c, frames=3) for c in found]
    assert [tuple(c.shape) for c in loaded] == [(11, 3, 36, 40), (4, 3, 40, 36)]
    sampler = SequenceSampler([], crop=16, frames=3, clips=loaded)
    lr, hr = sampler.sample(32, seed=5)
    assert lr.shape == (32, 3, 3, 4, 4) and hr.shape == (32, 3, 3, 16, 16)
    hr8 = ((hr + 1) * 127.5).round()
    steps = hr8[:, 1:] - hr8[:, :-1]  # (B, 2, 3, 16, 16)
    flat = steps.flatten(2)
    assert torch.equal(flat.amin(dim=2), flat.amax(dim=2))  # one crop, one flip/rotation for every frame
    per_seq = flat[:, :, 0]
    assert set(per_seq.flatten().tolist()) == {20.0, -20.0} and torch.equal(per_seq[:, 0], per_seq[:, 1])
    assert (per_seq[:, 0] < 0).any() and (per_seq[:, 0] > 0).any()  # both directions in time
    torch.testing.assert_close(lr, degrade_bicubic(hr8.to(torch.uint8).flatten(0, 1)).reshape(lr.shape).float() / 255)
    assert torch.equal(sampler.sample(32, seed=5)[1], hr) and not torch.equal(sampler.sample(32, seed=6)[1], hr)
    # with stills too, clip_share picks the source: 0 never cuts a clip, 1 always does
    stills = _stills(tmp_path)
    only_stills = SequenceSampler(stills, crop=16, frames=3, clips=loaded, clip_share=0.0).sample(8, seed=1)[1]
    assert torch.equal(only_stills, SequenceSampler(stills, crop=16, frames=3).sample(8, seed=1)[1])
    only_clips = SequenceSampler(stills, crop=16, frames=3, clips=loaded, clip_share=1.0).sample(8, seed=1)[1]
    d = (((only_clips + 1) * 127.5).round().diff(dim=1)).flatten(2)
    assert torch.equal(d.amin(dim=2), d.amax(dim=2))
    with pytest.raises(DataError, match="fewer than the 8"):
        load_clip(clips / "b", frames=8)
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match="no frame folders or video files"):
        clip_sources([tmp_path / "void"])


def test_a_video_file_is_a_clip(tmp_path: Path):
    video = make_clip(tmp_path / "v.mkv", frames=9, width=32, height=24, codec="ffv1", pix_fmt="yuv444p", audio="aac")
    assert clip_sources([video]) == [video] and clip_sources([tmp_path]) == [video]
    clip = load_clip(video, frames=3)
    assert clip.shape == (9, 3, 24, 32) and clip.dtype == torch.uint8
    assert (clip[1].float() - clip[0].float()).abs().mean() > 1  # the frames move
    with pytest.raises(DataError, match="not a video file or a folder"):
        clip_sources([tmp_path / "missing.mp4"])


def test_training_on_clips_alone_and_a_frozen_core(tmp_path: Path):
    torch.manual_seed(0)
    init = save(SRResNet().eval(), tmp_path / "mse.pt", meta={"name": "mse"})
    clips = tmp_path / "clips"
    for k in range(2):
        _clip_folder(clips / f"seq{k}", frames=5)
    run = train(_cfg(tmp_path / "frozen", data=[], clips=[str(clips)], init=str(init), core_lr=0.0), quiet=True)
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    start = torch.load(init, weights_only=False)
    start_state = start["state_dict"]
    assert all(torch.equal(ck["model"][f"core.{k}"], v) for k, v in start_state.items())  # frozen: untouched
    assert ck["model"]["temporal.weight"].abs().max() > 0 and ck["config"]["clips"] == [str(clips)]
    run = train(_cfg(tmp_path / "slow", data=[], clips=[str(clips)], init=str(init), core_lr=0.1), quiet=True)
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert any(not torch.equal(ck["model"][f"core.{k}"], v) for k, v in start_state.items())  # learning, slowly
    with pytest.raises(VsrError, match="--clips and --core-lr are for a temporal"):
        train(_cfg(tmp_path / "x", arch="srresnet", seq_len=1, clips=[str(clips)]), quiet=True)
    with pytest.raises(VsrError, match="or --clips of real video"):
        train(_cfg(tmp_path / "y", data=[]), quiet=True)


@pytest.mark.parametrize("arch", ["recurrent-srresnet", "window-srresnet"])
def test_warm_start_is_exact_then_training_moves_the_temporal_conv_and_exports(tmp_path: Path, arch: str):
    torch.manual_seed(0)
    base = SRResNet().eval()
    init = save(base, tmp_path / "mse.pt", meta={"name": "mse"})
    run0 = train(_cfg(tmp_path / "a", steps=0, init=str(init), arch=arch), quiet=True)
    rec = RecurrentSRResNet(**DEFAULT_PARAMS[arch])
    rec.load_state_dict(torch.load(run0 / "checkpoint.pt", weights_only=True)["model"])
    rec.eval()
    frames = torch.rand(3, 1, 3, 6, 5)
    state = None
    with torch.no_grad():
        for x in frames:
            out, state = rec(x, state)
            assert (out - base(x)).abs().max().item() < 1e-6

    run = train(_cfg(tmp_path / "b", steps=4, init=str(init), arch=arch), quiet=True)
    rows = _log(run)
    assert len(rows) == 4 and all(np.isfinite(float(r["pixel_mse"])) for r in rows)
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["config"]["arch"] == arch and ck["config"]["seq_len"] == 3
    assert ck["model"]["temporal.weight"].abs().max() > 0  # the temporal inputs started to matter
    loaded = load(str(export(run, tmp_path / "rec.pt", name="rec")))
    assert loaded.descriptor.temporal and loaded.meta["train_config"]["arch"] == arch
    assert loaded.descriptor.arch == arch and loaded.model.feedback == (arch == "recurrent-srresnet")
    up = Upscaler(loaded.model, device=torch.device("cpu"), descriptor=loaded.descriptor)
    clip = np.stack([frame_image(i, 7, 6) for i in range(3)])
    state = None
    for f in clip:
        out, state = up.upscale_stream(f[None], state)
        assert out.shape == (1, 24, 28, 3)


def test_resume_continues_bit_for_bit(tmp_path: Path):
    straight = train(_cfg(tmp_path / "a", steps=4), quiet=True)
    half = _cfg(tmp_path / "b", steps=2)
    train(half, quiet=True)
    resumed = train(resume_config(half.out, steps=4), resume=True, quiet=True)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["pixel_mse"] for r in _log(straight)] == [r["pixel_mse"] for r in _log(resumed)]


@pytest.mark.parametrize("layout", ["clips", "images"])
def test_validation_on_clip_folders_or_images(tmp_path: Path, layout: str):
    val = tmp_path / "val"
    if layout == "clips":
        for c in range(2):
            clip = val / f"clip{c}"
            clip.mkdir(parents=True)
            for i in range(3):
                cv2.imwrite(str(clip / f"{i:08d}.png"), frame_image(i + 7 * c, 24, 20))
    else:
        _images(val, n=2, size=(24, 20))
    run = train(_cfg(tmp_path, steps=2, val=str(val), val_every=2), quiet=True)
    rows = _log(run)
    assert rows[-1]["val_psnr"] and float(rows[-1]["val_psnr"]) > 5
    assert (run / "grid.png").is_file()


def test_validation_clips_are_in_the_same_natural_order_as_training_clips(tmp_path: Path):
    _clip_folder(tmp_path / "val" / "clip", frames=11)  # im1 .. im11
    (clip,) = load_val_clips(tmp_path / "val")
    assert torch.equal(torch.stack(clip), load_clip(tmp_path / "val" / "clip", frames=2))
    steps = [int(b[0, 0, 0]) - int(a[0, 0, 0]) for a, b in zip(clip, clip[1:])]
    assert steps == [20] * 10  # frame i is the texture + 20 * i: im2 follows im1, not im10


def test_gan_loss_runs_on_sequences(tmp_path: Path):
    run = train(_cfg(tmp_path, loss="gan", steps=2), quiet=True)
    rows = _log(run)
    assert len(rows) == 2 and all(float(r["d_loss"]) > 0 for r in rows)


def test_bad_recurrent_options_are_clear(tmp_path: Path):
    with pytest.raises(VsrError, match="at least 2 frames"):
        train(_cfg(tmp_path, seq_len=1), quiet=True)
    with pytest.raises(VsrError, match="--seq-len is for recurrent-srresnet"):
        train(_cfg(tmp_path, arch="srresnet", seq_len=3), quiet=True)
    with pytest.raises(VsrError, match="--arch 'rnn'"):
        train(_cfg(tmp_path, arch="rnn"), quiet=True)
    small = save(SRResNet(num_blocks=2, channels=16), tmp_path / "small.pt", meta={"name": "small"})
    with pytest.raises(WeightsError, match="an SRResNet of"):
        train(_cfg(tmp_path, init=str(small)), quiet=True)


def test_cli_trains_exports_and_describes_a_temporal_model(tmp_path: Path):
    hr = _images(tmp_path / "hr")
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--data", str(hr), "--out", str(tmp_path / "run"), "--arch", "recurrent-srresnet",
                              "--seq-len", "2", "--steps", "2", "--batch-size", "1", "--crop", "16",
                              "--precision", "fp32", "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--steps", "3", "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "export", str(tmp_path / "run"), "-o", str(tmp_path / "rec.pt")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["models", str(tmp_path / "rec.pt")])
    assert res.exit_code == 0 and "temporal: yes" in res.output
    res = runner.invoke(app, ["train", "--data", str(hr), "--out", str(tmp_path / "x"), "--seq-len", "3", "-q"])
    assert res.exit_code == 1 and "--seq-len is for" in res.output

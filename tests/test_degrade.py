"""Degradations: real codecs change the pixels deterministically, conditions parse, training draws follow the seed,
bench on a codec condition equals a direct computation, and the flicker figure has known answers."""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_bench import Bicubic
from typer.testing import CliRunner

from vsr import bench
from vsr.cli import app
from vsr.data import CropSampler
from vsr.errors import DataError, VsrError
from vsr.sequences import SequenceSampler
from vsr.degrade import (CodecStep, Condition, Degrader, JpegStep, codec_encode, codec_roundtrip,
                         parse_condition, parse_degradation)
from vsr.inference import Upscaler
from vsr.metrics import imresize, psnr, to_chw_tensor
from vsr.pipeline import Engine


def _clip(n: int = 6, h: int = 36, w: int = 44, seed: int = 0) -> list[np.ndarray]:
    """A textured picture panning right by one pixel a frame (codecs can predict it), with colour."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (h, w + n, 3), dtype=np.uint8), (3, 3), 0)
    return [np.ascontiguousarray(base[:, t:t + w]) for t in range(n)]


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_codec_roundtrip_is_deterministic_keeps_frames_and_changes_pixels(codec):
    frames = _clip()
    a = codec_roundtrip(frames, CodecStep(codec, 30))
    b = codec_roundtrip(frames, CodecStep(codec, 30))
    assert len(a) == len(frames) and all(x.shape == f.shape for x, f in zip(a, frames))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert codec_encode(frames, CodecStep(codec, 30)) == codec_encode(frames, CodecStep(codec, 30))
    diff = np.mean([np.abs(x.astype(int) - f).mean() for x, f in zip(a, frames)])
    assert diff > 1.0  # the codec really did something


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_higher_crf_gives_fewer_bytes_and_more_error(codec):
    frames = _clip()
    sizes, errors = [], []
    for crf in (18, 28, 38):
        step = CodecStep(codec, crf)
        sizes.append(sum(map(len, codec_encode(frames, step))))
        out = codec_roundtrip(frames, step)
        errors.append(np.mean([((x.astype(float) - f) ** 2).mean() for x, f in zip(out, frames)]))
    assert sizes[0] > sizes[1] > sizes[2]
    assert errors[0] < errors[1] < errors[2]


def test_jpeg_step_changes_pixels_by_quality():
    img = _clip(1)[0]
    e90 = np.abs(JpegStep(90).apply([img])[0].astype(int) - img).mean()
    e20 = np.abs(JpegStep(20).apply([img])[0].astype(int) - img).mean()
    assert 0 < e90 < e20


def test_conditions_parse_to_what_they_say():
    assert parse_condition("bi") == Condition("bi", ())
    assert parse_condition("h264:crf=28") == Condition("bi", (CodecStep("h264", 28, "medium"),))
    c = parse_condition("bd+h265:crf=30,preset=fast,gop=8+jpeg:q=40")
    assert c.base == "bd" and c.steps == (CodecStep("h265", 30, "fast", 8), JpegStep(40))
    assert parse_condition(c.label) == c  # the label is itself a valid condition
    assert "libx264 crf 23, preset medium" in parse_condition("h264:crf=23").describe()


@pytest.mark.parametrize("text", ["h264", "h264:crf=abc", "h264:crf=70", "h266:crf=20", "jpeg:q=0", "h264:crf=20,speed=3",
                                  "bi+", "h264:crf"])
def test_bad_condition_strings_list_the_valid_forms(text):
    with pytest.raises(Exception) as err:
        parse_condition(text)
    msg = str(err.value)
    assert text in msg and "valid forms" in msg and "h264:crf=N" in msg and "jpeg:q=N" in msg


def test_bad_condition_is_one_line_from_the_cli(tmp_path: Path, tiny_weights: Path):
    res = CliRunner().invoke(app, ["bench", str(tmp_path), "--weights", str(tiny_weights), "--degradation", "h264:q=3"])
    assert res.exit_code == 1 and "valid forms" in res.output and "Traceback" not in res.output


def test_training_presets_and_overrides():
    cfg = parse_degradation("real:codec_prob=0.9,crf_h264=20:30,presets=fast:medium")
    assert cfg.name == "real" and cfg.codec_prob == 0.9 and cfg.crf_h264 == (20, 30) and cfg.presets == ("fast", "medium")
    for bad in ("nope", "real:codec_prob", "real:colour=2", "real:codec_prob=high", "bi:codec_prob=1"):
        with pytest.raises(Exception, match="--degradation"):
            parse_degradation(bad)


def test_degrader_follows_the_seed_and_makes_real_damage():
    cfg = parse_degradation("real:clean_prob=0,codec_prob=1,h265_share=0.5")
    deg = Degrader(cfg, crop=32)
    torch.manual_seed(0)
    regions = torch.from_numpy(np.stack([c.transpose(2, 0, 1) for c in _clip(8, cfg.region(32), cfg.region(32))]))
    lr1, hr1 = deg(regions, 7)
    lr2, hr2 = deg(regions, 7)
    lr3, _ = deg(regions, 8)
    assert lr1.shape == (8, 3, 8, 8) and hr1.shape == (8, 3, 32, 32) and lr1.dtype == torch.uint8
    assert torch.equal(lr1, lr2) and torch.equal(hr1, hr2)
    assert not torch.equal(lr1, lr3)
    clean = imresize(hr1.float(), 0.25).to(torch.uint8)
    assert (lr1.float() - clean.float()).abs().mean() > 1.0  # not plain bicubic


def test_clean_share_is_exactly_bicubic_of_the_target_crop():
    deg = Degrader(parse_degradation("real:clean_prob=1"), crop=32)
    regions = torch.from_numpy(np.stack([c.transpose(2, 0, 1) for c in _clip(4, 41, 41)]))
    lr, hr = deg(regions, 3)
    assert torch.equal(lr, imresize(hr.float(), 0.25).round().clamp(0, 255).to(torch.uint8))


def test_context_degrades_a_larger_region_and_cuts_the_crop_from_inside_it():
    cfg = parse_degradation("real:clean_prob=1,codec_prob=0,context=2")
    assert cfg.region(32) == 64
    regions = torch.from_numpy(np.stack([c.transpose(2, 0, 1) for c in _clip(6, 64, 64)]))
    lr, hr = Degrader(cfg, crop=32)(regions, 5)
    assert lr.shape == (6, 3, 8, 8) and hr.shape == (6, 3, 32, 32)
    whole = imresize(regions.float(), 0.25).round().clamp(0, 255).to(torch.uint8)  # the LR of the whole region
    places = set()
    for i in range(6):
        at = [(y, x) for y in range(9) for x in range(9) if torch.equal(hr[i], regions[i, :, 4 * y:4 * y + 32, 4 * x:4 * x + 32])]
        assert at, "the target is not a crop of its region at a whole LR pixel"
        y, x = at[0]
        assert torch.equal(lr[i], whole[i, :, y:y + 8, x:x + 8])  # its LR comes from the region's, cut alike
        places.add(at[0])
    assert len(places) > 1  # the crop lands at different places


def test_context_with_a_codec_follows_the_seed_and_is_refused_for_sequences():
    cfg = parse_degradation("real:clean_prob=0,codec_prob=1,context=2")
    regions = torch.from_numpy(np.stack([c.transpose(2, 0, 1) for c in _clip(4, cfg.region(32), cfg.region(32))]))
    deg = Degrader(cfg, crop=32)
    (lr1, hr1), (lr2, hr2) = deg(regions, 3), deg(regions, 3)
    assert lr1.shape == (4, 3, 8, 8) and torch.equal(lr1, lr2) and torch.equal(hr1, hr2)
    images = [torch.from_numpy(c.transpose(2, 0, 1).copy()) for c in _clip(2, 96, 96)]
    with pytest.raises(DataError, match="context"):
        SequenceSampler(images, crop=32, frames=3, degradation=cfg)


@pytest.mark.parametrize("workers", [1, 3])
def test_sampler_with_a_degradation_is_deterministic_and_prefetch_changes_nothing(workers: int):
    images = [torch.from_numpy(c.transpose(2, 0, 1).copy()) for c in _clip(3, 80, 80)]
    sampler = CropSampler(images, crop=32, degradation=parse_degradation("real"), workers=workers)
    seeds = [11, 5, 7, 2, 9, 4]  # the coming steps' seeds, as the trainer passes them
    ahead = [sampler.sample_ahead(6, seeds[i:]) for i in range(len(seeds))]
    assert len(sampler._ahead) == 0  # the last call had nothing left to draw ahead
    plain = [sampler.sample(6, s) for s in seeds]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ahead, plain))
    assert not torch.equal(plain[0][0], plain[1][0])  # the seeds do draw different batches
    sampler.sample_ahead(6, [1, 2, 3, 4])  # a jump (a resumed run, another schedule): the stale draws are dropped
    assert set(sampler._ahead) == set([2, 3, 4][:workers])
    lr, hr = plain[0]
    assert lr.shape == (6, 3, 8, 8) and hr.shape == (6, 3, 32, 32) and 0 <= lr.min() and lr.max() <= 1


def _fake_vid4(root: Path, frames: int = 4) -> None:
    for i, clip in enumerate(bench.VID4_CLIPS):
        for k, img in enumerate(_clip(frames, 64, 64, seed=i)):
            for sub, pic in (("GT", img), ("BIx4", imresize(to_chw_tensor(img), 0.25).permute(1, 2, 0).numpy())):
                d = root / sub / clip
                d.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(d / f"{k:08d}.png"), cv2.cvtColor(np.ascontiguousarray(pic), cv2.COLOR_RGB2BGR))


def test_bench_bicubic_on_a_codec_condition_equals_a_direct_computation(tmp_path: Path):
    _fake_vid4(tmp_path)
    up = Upscaler(Bicubic(), device=torch.device("cpu"), precision="fp32")
    res = bench.run("vid4", Engine(up, batch_size=2), weights_name="bicubic", data=tmp_path, degradation="h264:crf=30")
    assert res.degradation == "h264:crf=30" and "libx264 crf 30" in res.lr_made_by and "whole clip" in res.lr_made_by
    for row, clip in zip(res.rows, bench.VID4_CLIPS):
        lrs = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((tmp_path / "BIx4" / clip).glob("*.png"))]
        gts = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((tmp_path / "GT" / clip).glob("*.png"))]
        coded = codec_roundtrip(lrs, CodecStep("h264", 30))  # the whole clip as one stream
        direct = np.mean([psnr(imresize(to_chw_tensor(lr), 4.0), to_chw_tensor(gt)) for lr, gt in zip(coded, gts)])
        assert row.frames == 4
        assert row.bicubic_psnr_y == pytest.approx(direct, abs=1e-6)
        assert row.psnr_y == pytest.approx(direct, abs=0.05)  # the bicubic "model" through the engine
    clean = bench.run("vid4", Engine(up, batch_size=2), weights_name="bicubic", data=tmp_path)
    assert clean.average().bicubic_psnr_y > res.average().bicubic_psnr_y + 0.3  # the codec costs quality


def test_flicker_has_known_answers():
    gt = _clip(5)
    assert bench.flicker(gt, gt) == 0.0
    steady = [np.clip(f.astype(int), 10, 245).astype(np.uint8) for f in gt]
    assert bench.flicker([s + 10 for s in steady], steady) == pytest.approx(0.0, abs=1e-9)  # a constant offset is not flicker
    # alternating +d/-d grey offsets: the frame difference is off by 2d in Y's units of (219/255) per RGB level
    d = 5
    alt = [(s.astype(int) + (d if t % 2 else -d)).astype(np.uint8) for t, s in enumerate(steady)]
    assert bench.flicker(alt, steady) == pytest.approx(2 * d * 219 / 255, rel=1e-6)
    assert bench.flicker(gt[:1], gt[:1]) is None


def test_vmaf_has_known_answers():
    pytest.importorskip("vmaf_torch", reason="VMAF needs the optional vmaf-torch package (pip install 'vsr[vmaf]')")
    from vsr import metrics

    gt = _clip(6, 96, 96)
    same = metrics.vmaf_frames(gt, gt)
    # identical frames: ADM and VIF are 1, so a frame with motion scores the model's ceiling (clipped to 100); the
    # first frame's motion is 0 by definition, and a static clip's every frame scores as that first frame does
    assert same.shape == (6,) and bool((same[1:] == 100.0).all()) and 90 < float(same[0]) < 100
    static = metrics.vmaf_frames([gt[0]] * 4, [gt[0]] * 4)
    assert torch.allclose(static, same[0].expand(4), atol=1e-4)

    def down_up(f: np.ndarray, factor: int) -> np.ndarray:
        small = cv2.resize(f, (96 // factor, 96 // factor), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (96, 96), interpolation=cv2.INTER_CUBIC)

    mild, strong = (metrics.vmaf([down_up(f, k) for f in gt], gt) for k in (2, 4))
    assert 100 > mild > strong + 5  # more damage, lower score
    with pytest.raises(ValueError, match="5 frames against 6"):
        metrics.vmaf(gt[:5], gt)


def test_bench_vmaf_of_bicubic_equals_a_direct_computation_and_is_refused_for_images(tmp_path: Path, monkeypatch,
                                                                                     tiny_weights: Path):
    pytest.importorskip("vmaf_torch", reason="VMAF needs the optional vmaf-torch package (pip install 'vsr[vmaf]')")
    from vsr import metrics

    _fake_vid4(tmp_path, frames=3)
    up = Upscaler(Bicubic(), device=torch.device("cpu"), precision="fp32")
    res = bench.run("vid4", Engine(up, batch_size=2), weights_name="bicubic", data=tmp_path, with_vmaf=True)
    assert "VMAF = vmaf-torch" in res.protocol
    for row, clip in zip(res.rows, bench.VID4_CLIPS):
        lrs = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((tmp_path / "BIx4" / clip).glob("*.png"))]
        gts = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((tmp_path / "GT" / clip).glob("*.png"))]
        direct = metrics.vmaf([imresize(to_chw_tensor(lr), 4.0).permute(1, 2, 0).numpy() for lr in lrs], gts)
        assert row.bicubic_vmaf == pytest.approx(direct, abs=1e-6) and 0 <= direct < 100
        assert row.vmaf == pytest.approx(direct, abs=0.5)  # the bicubic "model" through the engine
    assert res.average().vmaf == pytest.approx(np.mean([r.vmaf for r in res.rows]))
    table = bench.format_table(res)
    assert "| VMAF | bicubic VMAF |" in table
    cli = CliRunner().invoke(app, ["bench", "vid4", "--data", str(tmp_path), "--weights", str(tiny_weights), "--vmaf",
                                   "--degradation", "bi", "--degradation", "h264:crf=28", "--report", str(tmp_path / "r")])
    assert cli.exit_code == 0, cli.output
    assert "summary: vid4 average VMAF per condition" in cli.output and "| model | bi | h264:crf=28 | mean |" in cli.output
    assert "<th>VMAF</th>" in (tmp_path / "r" / "index.html").read_text()
    with pytest.raises(DataError, match="--vmaf is for video sets"):
        bench.run(str(tmp_path / "GT" / "city"), Engine(up), weights_name="bicubic", with_vmaf=True)
    monkeypatch.setitem(sys.modules, "vmaf_torch", None)  # as if it were not installed
    metrics._vmaf_model.cache_clear()
    try:
        with pytest.raises(VsrError, match=r"pip install 'vsr\[vmaf\]'"):
            bench.run("vid4", Engine(up), weights_name="bicubic", data=tmp_path, with_vmaf=True)
    finally:
        metrics._vmaf_model.cache_clear()


def test_cli_repeated_degradation_prints_one_table_each_and_a_summary(tmp_path: Path, tiny_weights: Path):
    _fake_vid4(tmp_path, frames=3)
    res = CliRunner().invoke(app, ["bench", "vid4", "--data", str(tmp_path), "--weights", str(tiny_weights),
                                   "--degradation", "bi", "--degradation", "h264:crf=28", "--degradation", "jpeg:q=40"])
    assert res.exit_code == 0, res.output
    assert "vid4 x4 (BI)" in res.output and "vid4 x4 (H264:CRF=28)" in res.output and "vid4 x4 (JPEG:Q=40)" in res.output
    assert "| model | bi | h264:crf=28 | jpeg:q=40 | mean |" in res.output
    assert "| bicubic |" in res.output and "flicker" in res.output


def test_noise_strength_follows_its_settings():
    from vsr.degrade import _noise

    grey = torch.full((1, 3, 64, 64), 127.5)

    def std(**over):
        cfg = parse_degradation("real:grey_noise_prob=0," + ",".join(f"{k}={v}" for k, v in over.items()))
        return float((_noise(grey, np.random.default_rng(0), cfg, torch.Generator().manual_seed(0)) - grey).std())

    assert std(poisson_prob=0, gauss_sigma="4:4") == pytest.approx(4, rel=0.1)
    weak, strong = std(poisson_prob=1, poisson_scale="0.05:0.05"), std(poisson_prob=1, poisson_scale="1:1")
    assert 1 < weak < 4 < 12 < strong < 25  # documented: about 2 and 18 levels at mid-grey

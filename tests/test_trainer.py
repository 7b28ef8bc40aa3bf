"""The training loop: every loss runs and learns, Per-Pix follows its schedule, resume is exact, DDP
keeps ranks in sync, export gives loadable weights, and bad input is a clear error."""
import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import pytest
import torch
from clips import frame_image
from typer.testing import CliRunner

import vsr.trainer as trainer
from vsr.cli import app
from vsr.cli.train import Loss
from vsr.config import TrainConfig
from vsr.errors import DataError, VsrError, WeightsError
from vsr.losses import LOSSES, content_weights, log_mse, parse_schedule
from vsr.models import VGG54
from vsr.trainer import export, resume_config, train
from vsr.weights import load


def _images(folder: Path, n: int = 3, size: tuple[int, int] = (40, 36)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), frame_image(i, *size))
    return folder


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """A randomly initialised VGG19 features[:36] state dict in the shipped file's format (fp16)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg.pt"
    torch.save({k: v.half() for k, v in VGG54().features.state_dict().items()}, path)
    return path


def _cfg(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(data=[str(_images(tmp_path / "hr"))], out=str(tmp_path / "run"), steps=6, batch_size=2, crop=16,
                lr=1e-3, lr_min=1e-3, precision="fp32", device="cpu", val_every=0, ckpt_every=3, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def _log(run: Path | str) -> list[dict]:
    with open(Path(run) / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_mse_training_lowers_the_loss_and_exports(tmp_path: Path):
    cfg = _cfg(tmp_path, steps=40, val=str(tmp_path / "hr"), val_every=20, log_every=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        run = train(cfg, quiet=True)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]  # no file left open
    rows = _log(run)
    assert float(rows[-1]["pixel_mse"]) < float(rows[0]["pixel_mse"])
    assert rows[-1]["val_psnr"] and float(rows[-1]["val_psnr"]) > 10
    assert (run / "curves.png").is_file() and (run / "grid.png").is_file()
    assert json.loads((run / "final.json").read_text())["step"] == 40
    loaded = load(str(export(run, tmp_path / "w.pt", name="w")))
    assert loaded.meta["steps"] == 40 and loaded.meta["train_config"]["loss"] == "mse"


@pytest.mark.parametrize("loss", ["vgg", "gan", "perpix"])
def test_perceptual_and_gan_losses_run_and_update_both_networks(tmp_path: Path, vgg_file: Path, loss: str):
    cfg = _cfg(tmp_path, loss=loss, vgg_weights=str(vgg_file), steps=3, perpix_schedule="1:10:1,2:10:10,3:1:10")
    run = train(cfg, quiet=True)
    rows = _log(run)
    assert len(rows) == 3 and all(float(r["loss"]) == float(r["loss"]) for r in rows)  # finite, not NaN
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ("discriminator" in ck) == (loss != "vgg")
    if loss == "perpix":
        assert [(float(r["w_mse"]), float(r["w_vgg"])) for r in rows] == [(10, 1), (10, 10), (1, 10)]
        assert all(float(r["adv"]) > 0 and float(r["d_loss"]) > 0 for r in rows)


def test_the_psnr_loss_is_minus_the_mean_psnr_and_trains(tmp_path: Path):
    hr = torch.zeros(2, 3, 4, 4)
    easy, hard = torch.full((1, 3, 4, 4), 0.01), torch.full((1, 3, 4, 4), 0.5)
    sr = torch.cat([easy, hard])
    psnrs = [10 * torch.log10(4 / torch.tensor(m)) for m in (1e-4, 0.25)]  # range [-1, 1]: peak 2, peak^2 4
    assert log_mse(sr, hr).item() == pytest.approx(10 * torch.log10(torch.tensor(4.0)).item() - sum(psnrs).item() / 2,
                                                   rel=1e-5)
    # halving the hard picture's error while the easy one's grows tenfold: batch MSE falls, mean PSNR falls too
    worse = torch.cat([easy * 10 ** 0.5, hard / 2 ** 0.5])
    assert torch.nn.functional.mse_loss(worse, hr) < torch.nn.functional.mse_loss(sr, hr)
    assert log_mse(worse, hr) > log_mse(sr, hr)
    run = train(_cfg(tmp_path, loss="psnr", steps=30, log_every=10), quiet=True)
    rows = _log(run)
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) < 0  # in dB: 10 log10 of an MSE below 1
    assert content_weights("psnr", 1) == (1, 0)


def test_perpix_schedule_boundaries():
    assert content_weights("perpix", 1) == (10, 1)
    assert content_weights("perpix", 15_000) == (10, 1)
    assert content_weights("perpix", 15_001) == (10, 10)
    assert content_weights("perpix", 20_000) == (10, 10)
    assert content_weights("perpix", 20_001) == (1, 10)
    assert content_weights("perpix", 35_000) == (1, 10)
    assert content_weights("perpix", 50_000) == (1, 10)
    custom = parse_schedule("100:2:0,200:0:3")
    assert content_weights("perpix", 100, schedule=custom) == (2, 0)
    assert content_weights("perpix", 101, schedule=custom) == (0, 3)
    assert content_weights("gan", 5, content="vgg") == (0, 1)
    with pytest.raises(VsrError):
        parse_schedule("200:1:1,100:1:1")


@pytest.mark.parametrize("loss", ["mse", "gan"])
def test_resume_continues_bit_for_bit(tmp_path: Path, vgg_file: Path, loss: str):
    straight = train(_cfg(tmp_path / "a", steps=6, loss=loss), quiet=True)
    half = _cfg(tmp_path / "b", steps=3, loss=loss)
    train(half, quiet=True)
    resumed = train(resume_config(half.out, steps=6), resume=True, quiet=True)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(resumed / "checkpoint.pt", weights_only=True)
    for key in ["model"] + (["discriminator"] if loss == "gan" else []):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert len(_log(resumed)) == 6


def test_degradation_workers_change_no_batch_and_a_resume_may_change_them(tmp_path: Path):
    """Threads drawing degraded batches ahead: one or three, and a resumed run on another count, train the same
    weights (each batch comes from its step's seed alone)."""
    common = dict(degradation="real", crop=32, steps=6)
    images = str(_images(tmp_path / "big", size=(72, 64)))
    one = train(_cfg(tmp_path / "a", data=[images], degrade_workers=1, **common), quiet=True)
    half = _cfg(tmp_path / "b", data=[images], degrade_workers=3, **{**common, "steps": 3})
    train(half, quiet=True)
    cfg = resume_config(half.out, steps=6, degrade_workers=2)
    assert cfg.degrade_workers == 2 and resume_config(half.out).degrade_workers == 3
    three = train(cfg, resume=True, quiet=True)
    a = torch.load(one / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(three / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in _log(one)] == [r["loss"] for r in _log(three)]


def test_init_from_weights_starts_from_them(tmp_path: Path):
    first = train(_cfg(tmp_path / "a", steps=3), quiet=True)
    w = export(first, tmp_path / "mse.pt", name="mse")
    second = train(_cfg(tmp_path / "b", steps=0, init=str(w)), quiet=True)
    a = torch.load(first / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(second / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_training_input(tmp_path: Path, vgg_file: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        train(_cfg(tmp_path, data=[str(tmp_path / "empty")]), quiet=True)
    with pytest.raises(DataError, match="smaller than the 96px crop"):
        train(_cfg(tmp_path, crop=96), quiet=True)
    bad = _images(tmp_path / "bad", n=1)
    (bad / "broken.png").write_bytes(b"\x89PNG junk")
    with pytest.raises(DataError, match="broken.png"):
        train(_cfg(tmp_path, data=[str(bad)]), quiet=True)
    with pytest.raises(WeightsError, match="VGG19 weights not found"):
        train(_cfg(tmp_path, loss="perpix", vgg_weights=str(tmp_path / "nope.pt")), quiet=True)
    torch.save({"0.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(WeightsError, match="does not match VGG19"):
        train(_cfg(tmp_path, loss="vgg", vgg_weights=str(tmp_path / "wrong.pt")), quiet=True)


def test_cli_train_export_upscale(tmp_path: Path):
    hr = _images(tmp_path / "hr")
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--data", str(hr), "--out", str(tmp_path / "run"), "--steps", "2",
                              "--batch-size", "2", "--crop", "16", "--precision", "fp32", "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--steps", "3", "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "export", str(tmp_path / "run"), "-o", str(tmp_path / "mine.pt"), "--half"])
    assert res.exit_code == 0 and load(str(tmp_path / "mine.pt")).meta["steps"] == 3
    cv2.imwrite(str(tmp_path / "small.png"), frame_image(0, 12, 10))
    res = runner.invoke(app, ["upscale", str(tmp_path / "small.png"), "--weights", str(tmp_path / "mine.pt"), "-q"])
    assert res.exit_code == 0 and cv2.imread(str(tmp_path / "small_x4.png")).shape == (40, 48, 3)
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "--data" in res.output


@pytest.mark.slow
def test_two_process_ddp_on_cpu_keeps_ranks_in_sync(tmp_path: Path):
    hr = _images(tmp_path / "hr", n=4)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "vsr", "train", "--data", str(hr), "--out", str(tmp_path / "run"), "--steps", "4", "--batch-size", "2",
           "--crop", "16", "--precision", "fp32", "--device", "cpu", "--loss", "gan", "-q"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["world_size"] == 2 and final["ranks_in_sync"] is True and final["step"] == 4


def test_snapshots_are_kept_and_exported_by_step(tmp_path: Path):
    run = train(_cfg(tmp_path, steps=4, keep_every=2), quiet=True)
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step0000002.pt", "step0000004.pt"]
    last = load(str(export(run, tmp_path / "last.pt", name="last")))
    at4 = load(str(export(run, tmp_path / "at4.pt", name="at4", step=4)))
    at2 = load(str(export(run, tmp_path / "at2.pt", name="at2", step=2)))
    assert at2.meta["steps"] == 2 and at4.meta["steps"] == 4
    a, b, c = (m.model.state_dict() for m in (last, at4, at2))
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(VsrError, match="no snapshot of step 3 .kept: 2, 4"):
        export(run, tmp_path / "x.pt", name="x", step=3)


def test_max_seconds_stops_with_a_checkpoint_that_resumes(tmp_path: Path):
    run = train(_cfg(tmp_path, steps=1000, max_seconds=1e-9), quiet=True)
    final = json.loads((run / "final.json").read_text())
    assert final["stopped_early"] is True and final["step"] < 1000
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["step"] == final["step"]
    resumed = train(resume_config(run, steps=final["step"] + 2), resume=True, quiet=True)
    again = json.loads((resumed / "final.json").read_text())
    assert again["step"] == final["step"] + 2 and again["stopped_early"] is False


def _without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_resume_after_a_crash_writes_each_log_row_once(tmp_path: Path, monkeypatch):
    straight = train(_cfg(tmp_path / "a", steps=6), quiet=True)
    real = trainer.save_checkpoint

    def killed_at_6(run):  # the process dies after logging step 6 but before its checkpoint
        if run.step == 6:
            raise RuntimeError("killed")
        real(run)

    monkeypatch.setattr(trainer, "save_checkpoint", killed_at_6)
    cfg = _cfg(tmp_path / "b", steps=6)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, quiet=True)
    assert [r["step"] for r in _log(cfg.out)] == ["1", "2", "3", "4", "5", "6"]  # the checkpoint is at 3
    monkeypatch.setattr(trainer, "save_checkpoint", real)
    train(resume_config(cfg.out), resume=True, quiet=True)
    assert _without_seconds(_log(cfg.out)) == _without_seconds(_log(straight))  # rows 4-6 once, bit-exact


def test_extending_steps_keeps_the_learning_rate_on_its_curve(tmp_path: Path, monkeypatch):
    kw = dict(lr=1e-3, lr_min=1e-5, ckpt_every=100)
    straight = [float(r["lr"]) for r in _log(train(_cfg(tmp_path / "a", steps=6, **kw), quiet=True))]
    real = trainer.train_step

    def ctrl_c_at_3(run, *args):
        if run.step == 3:
            raise KeyboardInterrupt
        return real(run, *args)

    monkeypatch.setattr(trainer, "train_step", ctrl_c_at_3)
    cfg = _cfg(tmp_path / "b", steps=6, **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, quiet=True)  # Ctrl-C saves a checkpoint at step 3 of 6
    monkeypatch.setattr(trainer, "train_step", real)
    train(resume_config(cfg.out, steps=10), resume=True, quiet=True)
    lrs = [float(r["lr"]) for r in _log(cfg.out)]
    assert len(lrs) == 10 and straight[0] == 1e-3 and straight[-1] < 2e-4
    assert lrs[3] == straight[3] and lrs[3] <= lrs[2]  # at the resume step: where the curve was, no jump
    assert lrs[:6] == straight and lrs[6:] == [1e-5] * 4  # the first run's curve, then --lr-min
    assert trainer.learning_rate(cfg, 6, 6) == 1e-5


def test_corrupt_or_foreign_checkpoints_are_one_line_errors(tmp_path: Path):
    run = train(_cfg(tmp_path, steps=2), quiet=True)
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    runner = CliRunner()

    def resume_error() -> str:
        res = runner.invoke(app, ["train", "--resume", str(run), "--steps", "3", "-q"])
        lines = res.output.strip().splitlines()
        assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), res.output
        assert "Traceback" not in res.output and str(run / "checkpoint.pt") in lines[0]
        return lines[0]

    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    assert "not a readable checkpoint" in resume_error()
    torch.save(ck | {"config": ck["config"] | {"bogus_option": 1}}, run / "checkpoint.pt")
    assert "options this vsr does not know (bogus_option)" in resume_error()
    torch.save(ck | {"model": {"head.0.weight": torch.zeros(1)}}, run / "checkpoint.pt")
    assert "does not match this run" in resume_error()


def test_cli_options_are_bounded_and_choices_listed(tmp_path: Path):
    hr = _images(tmp_path / "hr")
    runner = CliRunner()
    base = ["train", "--data", str(hr), "--out", str(tmp_path / "run"), "--steps", "1"]
    for bad in (["--log-every", "0"], ["--ckpt-every", "0"], ["--batch-size", "0"], ["--loss", "l1"],
                ["--precision", "fp8"], ["--content", "gan"], ["--beta1", "1.5"]):
        res = runner.invoke(app, base + bad)
        assert res.exit_code == 2 and bad[0] in res.output, (bad, res.output)
    assert not (tmp_path / "run").exists()
    help_text = runner.invoke(app, ["train", "--help"], terminal_width=200).output
    for choice in ("mse|vgg|gan|perpix", "auto|fp32|fp16|bf16"):
        assert choice in help_text.replace(" ", ""), help_text
    assert [m.value for m in Loss] == list(LOSSES)
    with pytest.raises(VsrError, match="--log-every must be at least 1"):
        train(_cfg(tmp_path, log_every=0), quiet=True)

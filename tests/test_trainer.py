"""The minimal MSE training loop: it learns, resumes exactly, exports loadable weights, rejects bad data."""
from pathlib import Path

import cv2
import pytest
import torch
from clips import frame_image

from vsr.config import TrainConfig
from vsr.errors import DataError
from vsr.trainer import export, train
from vsr.weights import load


def _images(folder: Path, n: int = 3, size: tuple[int, int] = (40, 36)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), frame_image(i, *size))
    return folder


def _cfg(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(data=[str(_images(tmp_path / "hr"))], out=str(tmp_path / "run"), steps=6, batch_size=2, crop=16,
                lr=1e-3, lr_min=1e-3, precision="fp32", device="cpu", val_every=0, ckpt_every=3, log_every=10)
    base.update(kw)
    return TrainConfig(**base)


def _log(run: Path) -> list[dict]:
    import csv

    return list(csv.DictReader(open(run / "log.csv")))


def test_mse_training_lowers_the_loss(tmp_path: Path):
    cfg = _cfg(tmp_path, steps=40, val=str(tmp_path / "hr"), val_every=40)
    run = train(cfg, quiet=True)
    rows = _log(run)
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert rows[-1]["val_psnr"] and float(rows[-1]["val_psnr"]) > 10
    loaded = load(str(export(run, tmp_path / "w.pt", name="w")))
    assert loaded.meta["steps"] == 40 and loaded.meta["train_config"]["loss"] == "mse"


def test_resume_continues_bit_for_bit(tmp_path: Path):
    straight = train(_cfg(tmp_path / "a", steps=6), quiet=True)
    _cfg(tmp_path / "b", steps=3)  # same data
    half = _cfg(tmp_path / "b", steps=3)
    train(half, quiet=True)
    half.steps = 6
    resumed = train(half, resume=True, quiet=True)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_training_data(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        train(_cfg(tmp_path, data=[str(tmp_path / "empty")]), quiet=True)
    with pytest.raises(DataError, match="smaller than the 96px crop"):
        train(_cfg(tmp_path, crop=96), quiet=True)
    bad = _images(tmp_path / "bad", n=1)
    (bad / "broken.png").write_bytes(b"\x89PNG junk")
    with pytest.raises(DataError, match="broken.png"):
        train(_cfg(tmp_path, data=[str(bad)]), quiet=True)

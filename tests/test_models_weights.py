from pathlib import Path

import pytest
import torch

from vsr.errors import WeightsError
from vsr.models import SRResNet, count_parameters
from vsr.weights import DEFAULT_WEIGHTS, SHIPPED, load, save


def test_srresnet_shape_and_size():
    model = SRResNet()
    assert 1.50e6 < count_parameters(model) < 1.60e6  # the recipe's ~1.55 M
    y = model(torch.rand(2, 3, 13, 9))
    assert y.shape == (2, 3, 52, 36)


def test_round_trip_keeps_outputs(tmp_path: Path):
    torch.manual_seed(1)
    model = SRResNet().eval()
    path = save(model, tmp_path / "m.pt", meta={"name": "m"})
    loaded = load(str(path))
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(model(x), loaded.model(x))
    assert loaded.scale == 4 and loaded.meta["name"] == "m"


def test_wrapper_prefixes_are_stripped(tmp_path: Path):
    model = SRResNet()
    state = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save({"format": "vsr-weights-v1", "meta": {}, "state_dict": state}, tmp_path / "ddp.pt")
    assert load(str(tmp_path / "ddp.pt")).model is not None


def test_mismatched_weights_are_named(tmp_path: Path):
    small = SRResNet(num_blocks=2)
    state = small.state_dict()
    torch.save({"format": "vsr-weights-v1", "meta": {}, "state_dict": state}, tmp_path / "small.pt")
    with pytest.raises(WeightsError, match="missing"):
        load(str(tmp_path / "small.pt"))
    state = SRResNet().state_dict()
    state["tail.weight"] = torch.zeros(3, 32, 9, 9)
    torch.save({"format": "vsr-weights-v1", "meta": {}, "state_dict": state}, tmp_path / "shape.pt")
    with pytest.raises(WeightsError, match="wrong shape.*tail.weight"):
        load(str(tmp_path / "shape.pt"))


def test_corrupt_and_foreign_files(tmp_path: Path):
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="not a readable weights file"):
        load(str(tmp_path / "junk.pt"))
    torch.save(SRResNet().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(WeightsError, match="not a vsr weights file"):
        load(str(tmp_path / "bare.pt"))
    with pytest.raises(WeightsError, match="neither a shipped model"):
        load(str(tmp_path / "absent.pt"))


def test_default_weights_are_shipped():
    assert DEFAULT_WEIGHTS in SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_are_committed_and_load(name):
    spec = SHIPPED[name]
    assert spec.path.is_file(), f"{spec.path} must be committed"
    loaded = load(name)
    assert loaded.meta["arch"] == "srresnet" and loaded.scale == 4
    assert loaded.meta["name"] == name

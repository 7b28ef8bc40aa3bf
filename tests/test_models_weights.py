import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsr.errors import VsrError, WeightsError
from vsr.inference import Upscaler
from vsr.models import SRResNet, count_parameters
from vsr.weights import DEFAULT_WEIGHTS, SHIPPED, ModelDescriptor, load, load_checkpoint, load_vgg54, save


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
    assert loaded.meta["arch"] == ("flow-srresnet" if name == "srresnet-flow" else "srresnet") and loaded.scale == 4
    assert loaded.meta["name"] == name


def test_the_shipped_video_model_is_srresnet_mse_inside():
    flow, mse = load("srresnet-flow"), load("srresnet-mse")
    assert flow.descriptor.temporal and flow.meta["made_from"] == "srresnet-mse"
    core = flow.model.core.state_dict()
    assert all(torch.equal(core[k], v) for k, v in mse.model.state_dict().items())


class RunsCode:
    """An object whose unpickling runs a shell command (what a malicious weights file carries)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("reader", ["weights", "checkpoint", "vgg"])
def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path: Path, reader: str):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "vsr-weights-v1", "meta": {"x": RunsCode(marker)}, "state_dict": SRResNet().state_dict(),
                "model": {}, "step": 0, "config": {}}, evil)
    torch.load(evil, weights_only=False)  # the negative control: an unsafe load does run it
    assert marker.exists()
    marker.unlink()
    read = {"weights": lambda: load(str(evil)), "checkpoint": lambda: load_checkpoint(evil),
            "vgg": lambda: load_vgg54(evil)}[reader]
    with pytest.raises(WeightsError) as err:
        read()
    assert str(err.value).startswith(f"{evil}: not a readable") and "\n" not in str(err.value)
    assert not marker.exists()


def test_descriptor_comes_from_the_file_and_drives_the_upscaler(tmp_path: Path):
    torch.manual_seed(0)
    path = save(SRResNet(num_blocks=1, channels=8, scale=2).eval(), tmp_path / "x2.pt", meta={"name": "x2"})
    loaded = load(str(path))
    d = loaded.descriptor
    assert (d.arch, d.scale, d.params) == ("srresnet", 2, {"num_blocks": 1, "channels": 8, "scale": 2})
    assert (d.input_range, d.output_range, d.in_channels, d.out_channels) == ((0.0, 1.0), (-1.0, 1.0), 3, 3)
    assert d.activation_elements == 3 * 8 * 2**2
    up = Upscaler(loaded.model, device=torch.device("cpu"), descriptor=d)
    assert up.scale == 2 and up.upscale(np.zeros((1, 5, 7, 3), np.uint8)).shape == (1, 10, 14, 3)
    assert set(torch.load(path, weights_only=True)["meta"]) == {"name", "arch", "arch_kwargs"}


class Recorder(torch.nn.Module):
    """Nearest x2 that records the input it was given; input range [-1, 1], output range [0, 255]."""

    scale = 2

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return F.interpolate((x + 1) * 127.5, scale_factor=2, mode="nearest")


def test_upscaler_follows_ranges_size_multiple_precisions_and_tiling():
    model = Recorder()
    d = ModelDescriptor(arch="recorder", scale=2, input_range=(-1.0, 1.0), output_range=(0.0, 255.0),
                        size_multiple=8, precisions=("fp32",), tiling=False)
    frames = np.random.default_rng(0).integers(0, 256, (1, 5, 11, 3), dtype=np.uint8)
    up = Upscaler(model, device=torch.device("cpu"), descriptor=d, max_pixels=16)  # budget below one frame
    out = up.upscale(frames)
    assert len(model.seen) == 1 and model.seen[0].shape == (1, 3, 8, 16)  # padded to multiples of 8, not tiled
    assert model.seen[0].min() >= -1 and model.seen[0].min() < -0.9  # the model saw its own input range
    np.testing.assert_array_equal(out, frames.repeat(2, axis=1).repeat(2, axis=2))  # cropped back, range mapped
    with pytest.raises(VsrError, match="does not run in bf16"):
        Upscaler(model, device=torch.device("cpu"), precision="bf16", descriptor=d)
    with pytest.raises(VsrError, match="cannot run on tiles"):
        Upscaler(model, device=torch.device("cpu"), descriptor=d, tile=4)


def test_models_listing_names_the_default_for_each_kind_of_input():
    from typer.testing import CliRunner

    from vsr.cli import app

    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0, res.output
    assert "srresnet-mse (default for images and folders of images): srresnet x4" in res.output
    assert "srresnet-flow (default for videos and folders holding one): flow-srresnet x4" in res.output
    assert res.output.count("(default") == 2

"""The inference rewrite of SRResNet computes the same function as the model it came from."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsr.inference import Upscaler
from vsr.models import SRResNet
from vsr.models.fused import FusedSRResNet, fold_batchnorm, fuse_for_inference, space_to_depth_conv


def _random_model(scale: int, seed: int = 0) -> SRResNet:
    """Random weights, BN statistics and PReLU slopes, so that every rewrite is exercised."""
    torch.manual_seed(seed)
    model = SRResNet(num_blocks=2, channels=8, scale=scale)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.3, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
        if isinstance(m, torch.nn.PReLU):
            m.weight.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_fused_model_matches_original(scale):
    model = _random_model(scale)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_inference(model)
    assert isinstance(fused, FusedSRResNet)
    x = torch.rand(2, 3, 13, 7)  # odd sizes: padding at every edge
    with torch.no_grad():
        ref, out = model(x), fused(x)
    assert out.shape == ref.shape == (2, 3, 13 * scale, 7 * scale)
    assert (out - ref).abs().max().item() < 1e-5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched


@pytest.mark.parametrize("kernel,out_ch", [(3, 5), (9, 3), (5, 16)])
def test_space_to_depth_conv(kernel, out_ch):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, out_ch, kernel, padding=kernel // 2)
    s2d = space_to_depth_conv(conv, 2)
    assert s2d.out_channels % 16 == 0
    x = torch.randn(1, 6, 10, 14)
    with torch.no_grad():
        got = F.pixel_shuffle(s2d(F.pixel_unshuffle(x, 2))[:, : out_ch * 4], 2)
        assert (got - conv(x)).abs().max().item() < 1e-5


def test_fold_batchnorm():
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.BatchNorm2d(6).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        assert (fold_batchnorm(conv, bn)(x) - bn(conv(x))).abs().max().item() < 1e-5


def test_upscaler_output_is_the_same_with_and_without_fusion():
    model = _random_model(4)
    frames = np.random.default_rng(0).integers(0, 256, (2, 11, 9, 3), dtype=np.uint8)
    a = Upscaler(model, device=torch.device("cpu"), precision="fp32").upscale(frames).astype(int)
    b = Upscaler(model, device=torch.device("cpu"), precision="fp32", fuse=False).upscale(frames).astype(int)
    assert np.abs(a - b).max() <= 1  # rounding of the last 1e-6 may flip a level


def test_other_models_pass_through():
    model = torch.nn.Conv2d(3, 3, 1)
    assert fuse_for_inference(model) is model


def test_cpu_calls_are_capped_to_stay_in_cache():
    calls = []

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 1), torch.nn.PixelShuffle(4))

        def forward(self, x):
            calls.append(x.shape[0])
            return self.net(x)

    up = Upscaler(Counting(), device=torch.device("cpu"), precision="fp32")
    up.run(torch.rand(4, 3, 200, 200))  # 40,000 px per frame: one frame per call
    up.run(torch.rand(6, 3, 64, 64))  # 4,096 px per frame: all in one call
    assert calls == [1, 1, 1, 1, 6]

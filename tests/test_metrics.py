import math

import numpy as np
import pytest
import torch

from vsr.data import read_image
from vsr.metrics import imresize, psnr, rgb_to_y, ssim, to_chw_tensor


def test_psnr_identical_is_inf_and_known_mse():
    a = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    assert psnr(a, a) == math.inf
    b = a.clone()
    b[0] += 10  # RGB MSE = 100/3
    assert psnr(a, b, y_channel=False) == pytest.approx(10 * math.log10(255**2 / (100 / 3)))


def test_y_channel_matches_matlab_rgb2ycbcr():
    white = torch.full((3, 1, 1), 255.0)
    black = torch.zeros(3, 1, 1)
    assert rgb_to_y(white).item() == pytest.approx(235.0, abs=1e-3)
    assert rgb_to_y(black).item() == pytest.approx(16.0)


def test_ssim_bounds():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, 255 - a) < 0.5


def test_imresize_shapes_and_constant_preserved():
    x = torch.full((3, 17, 10), 77, dtype=torch.uint8)
    assert imresize(x, 0.25).shape == (3, 5, 3)
    assert torch.all(imresize(x, 4.0) == 77)


def test_bicubic_reproduces_public_set5_lr(shared):
    """MATLAB-bicubic(GTmod12) == the public LRbicx4 files, and bicubic x4 Y-PSNR == 28.42 dB (+-0.05)."""
    hr_files = sorted((shared / "set5" / "GTmod12").glob("*.png"))
    scores = []
    for f in hr_files:
        hr = to_chw_tensor(read_image(f))
        lr = to_chw_tensor(read_image(shared / "set5" / "LRbicx4" / f.name))
        assert (imresize(hr, 0.25).float() - lr.float()).abs().mean() < 0.001
        scores.append(psnr(imresize(lr, 4.0), hr, crop_border=4))
    print(f"Set5 bicubic Y-PSNR {np.mean(scores):.3f} dB (published 28.42)")
    assert abs(np.mean(scores) - 28.42) <= 0.05

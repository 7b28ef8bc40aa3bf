import math

import numpy as np
import pytest
import torch

from vsr.images import read_image
from vsr.metrics import imresize, psnr, rgb_to_y, ssim, to_chw_tensor


def test_psnr_identical_is_inf_and_known_mse():
    a = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    assert psnr(a, a) == math.inf
    b = a.clone()
    b[0] += 10  # RGB MSE = 100/3
    assert psnr(a, b, y_channel=False) == pytest.approx(10 * math.log10(255**2 / (100 / 3)))


def test_y_channel_matches_matlab_rgb2ycbcr():
    """MATLAB rgb2ycbcr's Y of pure red, green, blue and two mixes (values from MATLAB's formula, 8-bit scale):
    each primary pins one weight, so any swap of the weights or of the channel axis fails."""
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 100, 50], [255, 255, 255]], dtype=torch.float64)
    want = [81.481, 144.553, 40.966, 16 + (200 * 65.481 + 100 * 128.553 + 50 * 24.966) / 255, 235.0]
    image = colours.T.reshape(3, 1, 5)  # (3, H=1, W=5): one colour per column
    np.testing.assert_allclose(rgb_to_y(image)[0].numpy(), want, atol=1e-3)
    batch = torch.stack([image, image.flip(-1)])  # (2, 3, 1, 5): the channel axis is -3 in a batch too
    np.testing.assert_allclose(rgb_to_y(batch)[1, 0].numpy(), want[::-1], atol=1e-3)
    assert rgb_to_y(torch.zeros(3, 1, 1)).item() == pytest.approx(16.0)


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
        hr = to_chw_tensor(read_image(f).rgb)
        lr = to_chw_tensor(read_image(shared / "set5" / "LRbicx4" / f.name).rgb)
        assert (imresize(hr, 0.25).float() - lr.float()).abs().mean() < 0.001
        scores.append(psnr(imresize(lr, 4.0), hr, crop_border=4))
    print(f"Set5 bicubic Y-PSNR {np.mean(scores):.3f} dB (published 28.42)")
    assert abs(np.mean(scores) - 28.42) <= 0.05


def test_crop_sampler_is_seeded_and_covers_flips_and_rotations():
    from vsr.data import CropSampler

    img = torch.arange(3 * 20 * 24, dtype=torch.int64).remainder(251).to(torch.uint8).view(3, 20, 24)
    sampler = CropSampler([img, img.flip(-1)], crop=8)
    lr1, hr1 = sampler.sample(64, seed=5)
    lr2, hr2 = sampler.sample(64, seed=5)
    assert torch.equal(hr1, hr2) and torch.equal(lr1, lr2)
    assert hr1.shape == (64, 3, 8, 8) and lr1.shape == (64, 3, 2, 2)
    assert not torch.equal(hr1, sampler.sample(64, seed=6)[1])
    # every crop is some flip/rotation of a window of one of the images
    windows = {}
    src = [img, img.flip(-1)]
    for s in src:
        for y in range(20 - 8 + 1):
            for x in range(24 - 8 + 1):
                w = s[:, y : y + 8, x : x + 8]
                for k in range(8):
                    t = torch.rot90(w.flip(-1) if k & 1 else w, k // 2, dims=(-2, -1))
                    windows.setdefault(t.numpy().tobytes(), set()).add(k)
    hr_u8 = ((hr1 + 1) * 127.5).round().to(torch.uint8)
    assert all(c.numpy().tobytes() in windows for c in hr_u8)

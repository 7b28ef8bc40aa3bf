"""Image-quality metrics with the conventions of the SR literature, and MATLAB-compatible bicubic.

- ``imresize``: MATLAB ``imresize(img, scale, 'bicubic')`` (Keys cubic a=-0.5, antialiased when
  downscaling, symmetric borders), used both for making LR inputs and for the bicubic baseline.
- ``rgb_to_y``: ITU-R BT.601 luma as MATLAB ``rgb2ycbcr`` (16-235 range), on [0, 255] floats.
- ``psnr`` / ``ssim``: on the Y channel (``y_channel=True``) or RGB, with a ``crop_border``.
- ``vmaf``: VMAF of a clip on that Y, through the optional vmaf-torch package (the v0.6.1 model is inside it).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


def _cubic(x: torch.Tensor) -> torch.Tensor:
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, scale: float) -> torch.Tensor:
    """Dense (out_len x in_len) float64 matrix M so that ``M @ signal`` is MATLAB's bicubic resize."""
    antialias = scale < 1
    width = 4.0 / scale if antialias else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # position in input coordinates (1-based)
    left = torch.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if antialias else _cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # symmetric boundary: index -1 -> 0, in_len -> in_len-1 (0-based after the shift)
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    src = mirror[torch.remainder(idx.long() - 1, 2 * in_len)]
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, src, w)
    return mat


def imresize(img: torch.Tensor, scale: float, *, quantize: bool = True) -> torch.Tensor:
    """Resize ``(..., H, W)`` float or uint8 (0-255 range) like MATLAB; output ceil(H*scale) x ceil(W*scale).

    With ``quantize`` the result is rounded and clipped to 0-255 (as MATLAB does for uint8 input);
    the dtype is float32 unless the input is uint8, in which case uint8 is returned.
    """
    h, w = img.shape[-2:]
    oh, ow = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    mh = resize_matrix(h, oh, scale).to(img.device)
    mw = resize_matrix(w, ow, scale).to(img.device)
    x = img.to(torch.float64)
    out = torch.matmul(torch.matmul(mh, x), mw.T)  # rows first, as MATLAB does for equal scales
    if quantize:
        out = out.round().clamp(0, 255)
    return out.to(torch.uint8) if img.dtype == torch.uint8 else out.to(torch.float32)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of ``(..., 3, H, W)`` RGB in [0, 255] -> ``(..., H, W)`` in [16, 235] (float64)."""
    x = img.to(torch.float64)
    r, g, b = x.unbind(dim=-3)
    return (65.481 * r + 128.553 * g + 24.966 * b) / 255.0 + 16.0


def _prepare(a: torch.Tensor, b: torch.Tensor, crop_border: int, y_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() != 3:
        raise ValueError(f"expected (C, H, W) images, got shape {tuple(a.shape)}")
    a, b = a.to(torch.float64), b.to(torch.float64)
    if y_channel and a.shape[0] == 3:
        a, b = rgb_to_y(a)[None], rgb_to_y(b)[None]
    if crop_border:
        a = a[:, crop_border:-crop_border, crop_border:-crop_border]
        b = b[:, crop_border:-crop_border, crop_border:-crop_border]
    return a, b


def psnr(a: torch.Tensor, b: torch.Tensor, *, crop_border: int = 0, y_channel: bool = True) -> float:
    """PSNR in dB between two ``(C, H, W)`` images in [0, 255]; ``inf`` for identical images.

    A one-channel image is scored on its channel (the MATLAB convention for greyscale Set14 images).
    """
    a, b = _prepare(a, b, crop_border, y_channel)
    mse = torch.mean((a - b) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, *, crop_border: int = 0, y_channel: bool = True) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, 'valid' window) of ``(C, H, W)`` images in
    [0, 255], averaged over channels."""
    a, b = _prepare(a, b, crop_border, y_channel)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()
    kv, kh = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, kv), kh)

    x, y = a[:, None], b[:, None]
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx**2
    syy = blur(y * y) - my**2
    sxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx**2 + my**2 + c1) * (sxx + syy + c2)
    return (num / den).mean().item()


def to_chw_tensor(img: np.ndarray) -> torch.Tensor:
    """HxW or HxWxC numpy image -> (C, H, W) tensor (no copy of values' range)."""
    t = torch.from_numpy(np.ascontiguousarray(img))
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


VMAF_CHUNK = 8  # frames per ADM/VIF call (bounded memory for any clip length; motion runs over the whole clip)


@lru_cache(maxsize=1)
def _vmaf_model():
    try:
        from vmaf_torch import VMAF
    except ImportError:
        from vsr.errors import VsrError

        raise VsrError("--vmaf needs the vmaf-torch package (its default VMAF v0.6.1 model is inside it): "
                       "pip install 'vsr[vmaf]'") from None
    return VMAF(temporal_pooling=False, enable_motion=True, clip_score=True).eval()


def vmaf_version() -> str:
    from importlib.metadata import version

    _vmaf_model()  # the clear error when it is missing
    return version("vmaf-torch")


def vmaf_frames(frames: list[np.ndarray], gt: list[np.ndarray]) -> torch.Tensor:
    """Per-frame VMAF (v0.6.1, vmaf-torch, scores clipped to 0-100) of (H, W, 3) uint8 frames against the ground
    truth, in order: on BT.601 luma (16-235, the Y plane a video would carry) at the ground truth's size; the
    motion feature comes from the ground truth, 0 for the first frame (as libvmaf does)."""
    model = _vmaf_model()

    def luma(images: list[np.ndarray]) -> torch.Tensor:
        return torch.stack([rgb_to_y(to_chw_tensor(f)) for f in images]).unsqueeze(1).to(torch.float32)

    with torch.no_grad():
        ref = luma(gt)
        motion = model.compute_motion2(ref)
        scores = []
        for i in range(0, len(gt), VMAF_CHUNK):
            r, d = ref[i : i + VMAF_CHUNK], luma(frames[i : i + VMAF_CHUNK])
            adm, vif = model.compute_adm_score(r, d), model.compute_vif_features(r, d)
            scores.append(model.predict(adm, motion[i : i + VMAF_CHUNK], vif))
    return torch.cat(scores).flatten()


def vmaf(frames: list[np.ndarray], gt: list[np.ndarray]) -> float:
    """Mean VMAF of a clip (``vmaf_frames``), higher is better."""
    if len(frames) != len(gt):
        raise ValueError(f"{len(frames)} frames against {len(gt)} ground-truth frames")
    return float(vmaf_frames(frames, gt).mean())

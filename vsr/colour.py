"""RGB -> YUV 4:2:0 on torch tensors, so the upscaled pictures leave the GPU ready for the encoder.

On a GPU the 4x pictures reach the CPU as 8-bit YUV 4:2:0 planes (half the bytes of RGB) and the
encoder thread skips swscale's RGB -> YUV conversion, which at 3840x2160 costs it tens of
milliseconds per frame on one core, beside x264 (benchmarks/RESULTS.md). The conversion follows
what swscale does in ``vsr.video`` (BT.601/709/2020 matrices by the stream's colour tags, limited or
full range, chroma filtered down centred with an antialiased bicubic): luma within one level of it,
chroma within two at sharp edges and a third of a level on average (full range: half a level higher,
where swscale rounds lower); tests/test_colour.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# AVColorSpace -> (Kr, Kb). Unspecified (2) is what swscale assumes for it: BT.601.
_MATRICES: dict[int, tuple[float, float]] = {
    1: (0.2126, 0.0722),  # BT.709
    2: (0.299, 0.114),  # unspecified
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG (BT.601 625)
    6: (0.299, 0.114),  # SMPTE 170M (BT.601 525)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG; unspecified (0) and MPEG (1) are limited range, as swscale takes them


@dataclass(frozen=True)
class Yuv420:
    """An 8-bit YUV 4:2:0 target: the luma weights of its matrix and its range."""

    kr: float
    kb: float
    full_range: bool

    @classmethod
    def for_tags(cls, colorspace: int, color_range: int) -> Yuv420 | None:
        """The target for a stream's colour tags, or None for a matrix this module does not know."""
        if colorspace not in _MATRICES:
            return None
        kr, kb = _MATRICES[colorspace]
        return cls(kr, kb, color_range == _FULL_RANGE)


def rgb_to_yuv420p(x: torch.Tensor, target: Yuv420) -> torch.Tensor:
    """``x``: (N, 3, H, W) RGB float in [0, 1], H and W even -> (N, 3H/2, W) uint8 on the same device.

    Each picture is laid out as PyAV's ``yuv420p`` arrays are: H rows of Y, then the U and then the V
    plane (H/2 x W/2 each) packed into H/4 rows of W.
    """
    n, c, h, w = x.shape
    if c != 3 or h % 2 or w % 2:
        raise ValueError(f"expected (N, 3, H, W) with even H and W, got {tuple(x.shape)}")
    x = x.float()
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    kr, kb = target.kr, target.kb
    y = kr * r + (1.0 - kr - kb) * g + kb * b
    chroma = torch.cat([(b - y) / (2.0 * (1.0 - kb)), (r - y) / (2.0 * (1.0 - kr))], dim=1)
    chroma = F.interpolate(chroma, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    if target.full_range:
        y8, c8 = y * 255.0, chroma * 255.0 + 128.0
    else:
        y8, c8 = y * 219.0 + 16.0, chroma * 224.0 + 128.0
    y8 = y8.round_().clamp_(0, 255).to(torch.uint8).reshape(n, -1)
    c8 = c8.round_().clamp_(0, 255).to(torch.uint8).reshape(n, -1)  # U plane then V plane
    return torch.cat([y8, c8], dim=1).reshape(n, h * 3 // 2, w)


__all__ = ["Yuv420", "rgb_to_yuv420p"]

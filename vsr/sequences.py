"""Synthetic training sequences from still images: an HR crop filmed by a camera in smooth sub-pixel motion
(constant velocity, zoom and rotation per sequence, a small per-frame jitter), and its LR by the training
degradation, one draw per sequence (``vsr.degrade``). For the temporal generator (``--arch recurrent-srresnet``).

Frames are rendered by bicubic resampling of the still (with the crop's flip/rotation folded into the same
affine map), so sub-pixel positions soften the HR slightly compared with a plain crop. Every random number
comes from the step's seed, so a resumed run sees the same sequences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vsr.data import CropSampler, degrade_bicubic, degrade_gaussian
from vsr.degrade import DegradationConfig
from vsr.errors import DataError

# The flips and 90-degree rotations of a crop as 2x2 maps of (x, y) output offsets to image offsets.
_DIHEDRAL = [torch.tensor(m, dtype=torch.float64) for m in (
    [[1, 0], [0, 1]], [[-1, 0], [0, 1]], [[0, -1], [1, 0]], [[0, 1], [1, 0]],
    [[-1, 0], [0, -1]], [[1, 0], [0, -1]], [[0, 1], [-1, 0]], [[0, -1], [-1, 0]])]


@dataclass(frozen=True)
class Motion:
    """The camera: per frame at most ``shift`` HR px along each axis, ``zoom`` relative scale, ``rotation``
    degrees (each drawn once per sequence, uniformly in +-max), plus Gaussian jitter of ``jitter`` HR px."""

    shift: float = 4.0
    zoom: float = 0.01
    rotation: float = 0.5
    jitter: float = 0.25

    def min_size(self, crop: int, frames: int) -> int:
        """The smallest image side that holds every frame of a sequence (with the bicubic support)."""
        t = frames - 1
        angle = math.radians(self.rotation * t)
        extent = crop * (1 + self.zoom) ** t * (abs(math.cos(angle)) + abs(math.sin(angle)))
        return math.ceil(extent + self.shift * t + 4 * self.jitter + 6)


class SequenceSampler(CropSampler):
    """Batches of (LR, HR) sequences: LR (B, T, 3, crop/4, crop/4) in [0, 1] (8-bit values), HR (B, T, 3, crop,
    crop) in [-1, 1], frame 0 first. ``sample_ahead`` (prefetching the CPU degradations) works as for crops."""

    def __init__(self, images: list[torch.Tensor], *, crop: int, frames: int, motion: Motion = Motion(),
                 scale: int = 4, device: torch.device | str = "cpu",
                 degradation: DegradationConfig | None = None) -> None:
        if frames < 1:
            raise DataError(f"a sequence needs at least one frame, got {frames}")
        super().__init__(images, crop=crop, scale=scale, device=device, degradation=degradation)
        self.frames, self.motion = frames, motion
        need = motion.min_size(crop, frames)
        small = [i for i, img in enumerate(images) if min(img.shape[-2:]) < need]
        if small:
            h, w = images[small[0]].shape[-2:]
            raise DataError(f"training image {small[0]} ({w}x{h}) is smaller than the {need}px that a {frames}-frame "
                            f"sequence of {crop}px crops under this motion needs")

    def sample(self, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of sequences drawn from ``seed`` alone."""
        gen = torch.Generator().manual_seed(seed)
        which = torch.randint(len(self.images), (batch,), generator=gen).tolist()
        case = torch.randint(8, (batch,), generator=gen).tolist()
        draws = torch.rand(batch, 6, generator=gen, dtype=torch.float64)
        jitter = torch.randn(batch, self.frames, 2, generator=gen, dtype=torch.float64) * self.motion.jitter
        hr = torch.stack([self._render(self.images[i], case[b], draws[b], jitter[b]) for b, i in enumerate(which)])
        n, t = hr.shape[:2]
        if self.degrader is not None:
            lr = self.degrader.sequences(hr.cpu(), (seed * 2 + 1) % (2**63)).to(self.device, non_blocking=True)
        else:
            flat = hr.flatten(0, 1)
            lr = degrade_bicubic(flat, self.scale) if self.degradation.name == "bi" else torch.stack(
                [degrade_gaussian(f, self.scale) for f in flat])
            lr = lr.reshape(n, t, *lr.shape[1:])
        hr = hr.to(self.device, non_blocking=True)
        return lr.float() / 255.0, hr.float() / 127.5 - 1.0

    def _render(self, img: torch.Tensor, case: int, draw: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
        """(T, 3, crop, crop) uint8: the frames of one sequence over ``img`` (3, H, W) uint8."""
        m, c, frames = self.motion, self.crop, self.frames
        h, w = img.shape[-2:]
        u = draw * 2 - 1  # uniform in [-1, 1]
        velocity = u[:2] * m.shift
        zoom = 1 + u[2] * m.zoom
        angle = math.radians(float(u[3]) * m.rotation)
        t = torch.arange(frames, dtype=torch.float64)
        offsets = t[:, None] * velocity + jitter  # (T, 2) centre (x, y) relative to frame 0
        grid = torch.arange(c, dtype=torch.float64) - (c - 1) / 2
        yy, xx = torch.meshgrid(grid, grid, indexing="ij")
        pts = torch.stack([xx, yy], dim=-1).reshape(-1, 2)  # (c*c, 2) output offsets (x, y)
        warped = []
        for k in range(frames):
            a = angle * k
            rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
            warped.append(pts @ (zoom**k * rot @ _DIHEDRAL[case]).T + offsets[k])
        rel = torch.stack(warped)  # (T, c*c, 2), relative to the centre of frame 0
        lo, hi = rel.amin(dim=(0, 1)), rel.amax(dim=(0, 1))
        room_lo = -lo + 2  # keep the bicubic support (2 px) inside the image
        room_hi = torch.tensor([w - 1.0, h - 1.0], dtype=torch.float64) - hi - 2
        centre = room_lo + (u[4:6] + 1) / 2 * (room_hi - room_lo).clamp(min=0)
        pos = rel + centre  # pixel-centre coordinates in the image
        size = torch.tensor([w, h], dtype=torch.float64)
        norm = ((2 * pos + 1) / size - 1).reshape(1, frames * c, c, 2).to(torch.float32)
        src = img[None].float()
        out = F.grid_sample(src, norm.to(src.device), mode="bicubic", padding_mode="reflection", align_corners=False)
        out = out[0].reshape(3, frames, c, c).transpose(0, 1)
        return out.round().clamp(0, 255).to(torch.uint8)

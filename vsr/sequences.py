"""Training sequences for a temporal generator (``--arch recurrent-srresnet``): real clips (folders of frames
or video files, ``--clips``) cropped in place, and synthetic ones made from still images, an HR crop filmed
by a camera in smooth sub-pixel motion (constant velocity, zoom and rotation per sequence, a small per-frame
jitter). Either way the LR comes from the training degradation, one draw per sequence (``vsr.degrade``).

Synthetic frames are rendered by bicubic resampling of the still (with the crop's flip/rotation folded into
the same affine map), so sub-pixel positions soften the HR slightly compared with a plain crop. A clip's
window is a run of consecutive frames (either direction in time) with one crop position and one
flip/rotation for all its frames. Every random number comes from the step's seed, so a resumed run sees
the same sequences.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vsr.data import CropSampler, degrade_bicubic, degrade_gaussian, frame_order, load_images
from vsr.degrade import DegradationConfig
from vsr.errors import DataError, VsrError
from vsr.images import is_image_path

log = logging.getLogger(__name__)

CLIP_FRAMES = 300  # frames a video file given to --clips contributes (its first ones): bounded memory

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
    crop) in [-1, 1], frame 0 first. ``sample_ahead`` (prefetching the CPU degradations) works as for crops.

    ``images``: stills for synthetic motion; ``clips``: real clips, each (F, 3, H, W) uint8. With both, a
    sequence comes from a clip with probability ``clip_share`` (default 0.5); clip windows are equally
    likely whatever clip they are in."""

    def __init__(self, images: list[torch.Tensor], *, crop: int, frames: int, motion: Motion = Motion(),
                 clips: Sequence[torch.Tensor] = (), clip_share: float | None = None, scale: int = 4,
                 device: torch.device | str = "cpu", degradation: DegradationConfig | None = None, workers: int = 1) -> None:
        if frames < 1:
            raise DataError(f"a sequence needs at least one frame, got {frames}")
        self.clips = list(clips)
        super().__init__(images, crop=crop, scale=scale, device=device, degradation=degradation, workers=workers)
        self.frames, self.motion = frames, motion
        if self.degradation.context > 1 and not self.degradation.is_clean:
            raise DataError(f"degradation context {self.degradation.context}: context is for single-frame training "
                            "(a temporal model's sequences are degraded at their crop size)")
        need = motion.min_size(crop, frames)
        small = [i for i, img in enumerate(images) if min(img.shape[-2:]) < need]
        if small:
            h, w = images[small[0]].shape[-2:]
            raise DataError(f"training image {small[0]} ({w}x{h}) is smaller than the {need}px that a {frames}-frame "
                            f"sequence of {crop}px crops under this motion needs")
        for i, clip in enumerate(self.clips):
            if clip.dim() != 4 or clip.shape[0] < frames or min(clip.shape[-2:]) < crop:
                raise DataError(f"training clip {i} ({tuple(clip.shape)}) needs at least {frames} frames of at least "
                                f"{crop}x{crop}")
        if clip_share is not None and not 0 <= clip_share <= 1:
            raise DataError(f"clip share {clip_share} is not between 0 and 1")
        self.clip_share = (0.0 if not self.clips else 1.0 if not images
                           else 0.5 if clip_share is None else float(clip_share))
        self.clips = self._on_device(self.clips)
        self._windows = torch.tensor([c.shape[0] - frames + 1 for c in self.clips], dtype=torch.int64).cumsum(0)

    def _require(self, images: list[torch.Tensor]) -> None:
        if not images and not self.clips:
            raise DataError("no training images or clips")

    def sample(self, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of sequences drawn from ``seed`` alone."""
        gen = torch.Generator().manual_seed(seed)
        which = torch.randint(max(1, len(self.images)), (batch,), generator=gen).tolist()
        case = torch.randint(8, (batch,), generator=gen).tolist()
        draws = torch.rand(batch, 6, generator=gen, dtype=torch.float64)
        jitter = torch.randn(batch, self.frames, 2, generator=gen, dtype=torch.float64) * self.motion.jitter
        real = [False] * batch
        if self.clips:  # a generator of its own: stills-only runs draw what they always drew
            cgen = torch.Generator().manual_seed((seed * 3 + 1) % (2**63))
            real = (torch.rand(batch, generator=cgen, dtype=torch.float64) < self.clip_share).tolist()
            window = torch.randint(int(self._windows[-1]), (batch,), generator=cgen)
            backwards = (torch.rand(batch, generator=cgen) < 0.5).tolist()
            where = torch.rand(batch, 2, generator=cgen, dtype=torch.float64)
        hr = torch.stack([self._cut(int(window[b]), bool(backwards[b]), where[b], case[b]) if real[b]
                          else self._render(self.images[i], case[b], draws[b], jitter[b]) for b, i in enumerate(which)])
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

    def _cut(self, window: int, backwards: bool, where: torch.Tensor, case: int) -> torch.Tensor:
        """(T, 3, crop, crop) uint8: window number ``window`` over all clips, one crop, one flip/rotation."""
        k = int(torch.searchsorted(self._windows, torch.tensor(window), right=True))
        start = window - (int(self._windows[k - 1]) if k else 0)
        clip, c = self.clips[k], self.crop
        h, w = clip.shape[-2:]
        y, x = int(where[0] * (h - c + 1)), int(where[1] * (w - c + 1))
        seq = clip[start : start + self.frames, :, y : y + c, x : x + c]
        if backwards:
            seq = seq.flip(0)
        if case & 1:
            seq = seq.flip(-1)
        return torch.rot90(seq, case // 2, dims=(-2, -1)).contiguous()

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


def clip_sources(paths: Sequence[str | Path]) -> list[Path]:
    """The clips under ``paths``: a video file is one clip; in a folder, every folder that holds images
    directly (at any depth) is one clip, and every video file is one. An error names a path that holds none
    (``load_clip`` checks each clip's length)."""
    from vsr.video import is_video_path

    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file() and is_video_path(path):
            found.append(path)
            continue
        if not path.is_dir():
            raise DataError(f"--clips {path}: not a video file or a folder of clips (does it exist?)")
        here = sorted({p.parent for p in path.rglob("*") if p.is_file() and is_image_path(p)}
                      | {p for p in path.rglob("*") if p.is_file() and is_video_path(p)})
        if not here:
            raise DataError(f"--clips {path}: no frame folders or video files found")
        found.extend(here)
    return found


def load_clip(path: Path, *, frames: int) -> torch.Tensor:
    """One clip as (F, 3, H, W) uint8: a folder's images in natural name order (im2 before im10), or a video's first ``CLIP_FRAMES``
    frames (8-bit RGB; the log says when a video is longer)."""
    if path.is_dir():
        images = load_images(sorted((p for p in path.iterdir() if p.is_file() and is_image_path(p)), key=frame_order))
        sizes = {tuple(img.shape) for img in images}
        if len(sizes) > 1:
            raise DataError(f"--clips {path}: its frames differ in size ({', '.join(f'{s[2]}x{s[1]}' for s in sorted(sizes))})")
    else:
        images = _video_frames(path)
    if len(images) < frames:
        raise DataError(f"--clips {path}: {len(images)} frame(s), fewer than the {frames} of a training sequence")
    return torch.stack(images)


def _video_frames(path: Path) -> list[torch.Tensor]:
    from vsr.video import VideoReader

    images: list[torch.Tensor] = []
    try:
        with VideoReader(path, video_only=True) as reader:
            for frame in reader.frames_between(None, None):
                if len(images) == CLIP_FRAMES:
                    log.info("--clips %s: training on its first %d frames", path, CLIP_FRAMES)
                    break
                img = frame.image
                if img.dtype != np.uint8:
                    img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
                images.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous())
    except VsrError as exc:
        raise DataError(f"--clips {path}: {exc}") from None
    sizes = {tuple(img.shape) for img in images}
    if len(sizes) > 1:
        raise DataError(f"--clips {path}: the frame size changes within the video; cut it where it does")
    return images

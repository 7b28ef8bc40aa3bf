"""Training and evaluation data: image folders decoded to tensors, random crops with flips/rotations, and the x4
degradations (bicubic BI, Gaussian BD; the realistic chain and codecs are in ``vsr.degrade``). Image files
themselves are read by ``vsr.images``."""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from vsr.degrade import DegradationConfig, Degrader
from vsr.errors import DataError, InputError
from vsr.images import IMAGE_EXTENSIONS, is_image_path, read_image
from vsr.metrics import imresize


def list_images(folders: Iterable[str | Path]) -> list[Path]:
    """Image files (by extension) in the given folders, sorted; an error if a folder is missing or empty."""
    found: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder of images (does it exist?)")
        files = sorted(p for p in folder.rglob("*") if is_image_path(p) and p.is_file())
        if not files:
            raise DataError(f"{folder}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
        found.extend(files)
    return found


def frame_order(path: Path) -> list[int | str]:
    """Sort key for the frames of a clip: digit runs compare as numbers (im2 before im10), the rest as text."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def load_images(paths: Sequence[Path], *, min_size: int = 0) -> list[torch.Tensor]:
    """Decode every image once into a (3, H, W) uint8 tensor; images smaller than ``min_size`` are an error."""
    images = []
    for path in paths:
        try:
            img = read_image(path).rgb
        except InputError as exc:  # in a training set, a bad image is bad data
            raise DataError(str(exc)) from None
        if img.dtype != np.uint8:
            img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
        if min(img.shape[:2]) < min_size:
            raise DataError(f"{path}: {img.shape[1]}x{img.shape[0]} is smaller than the {min_size}px crop")
        images.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous())
    return images


def degrade_bicubic(hr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """HR uint8 (..., 3, H, W) -> LR uint8 by MATLAB-compatible bicubic 1/scale (H, W multiples of scale)."""
    return imresize(hr, 1.0 / scale)


def degrade_gaussian(hr: torch.Tensor, scale: int = 4, sigma: float = 1.6) -> torch.Tensor:
    """BD degradation: 13x13 Gaussian (sigma 1.6, replicate padding), every ``scale``-th pixel, floor."""
    r = 6
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    img = hr.to(torch.float64)[None]
    img = torch.nn.functional.pad(img, (r, r, r, r), mode="replicate")
    c = img.shape[1]
    img = torch.nn.functional.conv2d(img, g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    img = torch.nn.functional.conv2d(img, g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return img[0, :, ::scale, ::scale].floor().clamp(0, 255).to(torch.uint8)


def mod_crop(img: torch.Tensor, multiple: int) -> torch.Tensor:
    """Crop (..., H, W) at the bottom/right so that H and W are multiples of ``multiple``."""
    h, w = img.shape[-2:]
    return img[..., : h - h % multiple, : w - w % multiple]


class CropSampler:
    """Random HR crops with flips/rotations and their LR (bicubic, BD, or a :mod:`vsr.degrade` chain), batched on ``device``.

    Returns ``(lr, hr)``: LR in [0, 1] (quantised to 8 bits like a real image), HR in [-1, 1].
    """

    def __init__(self, images: list[torch.Tensor], *, crop: int, scale: int = 4, device: torch.device | str = "cpu",
                 degradation: DegradationConfig | None = None, workers: int = 1) -> None:
        if crop % scale:
            raise DataError(f"crop {crop} must be a multiple of the scale {scale}")
        self._require(images)
        self.crop, self.scale, self.device = crop, scale, torch.device(device)
        self.degradation = degradation or DegradationConfig()
        self.degrader = None if self.degradation.is_clean else Degrader(self.degradation, crop=crop)
        self.region = self.degradation.region(crop)  # room around the crop for context or a moving sequence
        # threads drawing degraded batches ahead (codecs and torch ops release the GIL); none for clean bicubic
        self.workers = max(1, workers) if self.degrader is not None else 0
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vsr-degrade") if self.workers else None
        self._ahead: dict[int, Future] = {}
        # decoded once; on a GPU the whole set lives in device memory and crops never touch the host
        self.images = self._on_device(images)

    def _require(self, images: list[torch.Tensor]) -> None:
        if not images:
            raise DataError("no training images")

    def _on_device(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [t.to(self.device) for t in tensors] if self.device.type == "cuda" else list(tensors)

    def sample_ahead(self, batch: int, seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``sample(batch, seeds[0])``, while the worker threads already draw the batches of the next ``workers``
        seeds (the coming steps'): the CPU degradations overlap the model step and each other. Same batches as
        ``sample``, whatever the number of workers."""
        if self._pool is None:
            return self.sample(batch, seeds[0])
        wanted = list(seeds[: self.workers + 1])
        pending = self._ahead.pop(wanted[0], None)
        for seed in [s for s in self._ahead if s not in wanted]:  # not coming after all (e.g. another batch size)
            self._ahead.pop(seed).cancel()
        for seed in wanted[1:]:
            if seed not in self._ahead:
                self._ahead[seed] = self._pool.submit(self.sample, batch, seed)
        return pending.result() if pending is not None else self.sample(batch, wanted[0])

    def sample(self, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch drawn from ``seed`` alone, so a resumed run sees exactly the crops it would have seen.

        All random numbers are drawn at once and the 8 flip/rotation cases are applied per group, so a
        batch costs a handful of device operations whatever its size (no per-crop work on a GPU).
        """
        gen = torch.Generator().manual_seed(seed)
        which = torch.randint(len(self.images), (batch,), generator=gen).tolist()
        where = torch.rand(batch, 2, generator=gen, dtype=torch.float64).tolist()
        case = torch.randint(8, (batch,), generator=gen)
        crops = []
        size = self.region
        for i, (fy, fx) in zip(which, where):
            img = self.images[i]
            h, w = img.shape[-2:]
            y, x = int(fy * (h - size + 1)), int(fx * (w - size + 1))
            crops.append(img[:, y : y + size, x : x + size])
        hr = torch.stack(crops)
        for k in case.unique().tolist():
            if k == 0:
                continue
            rows = (case == k).nonzero().flatten().to(hr.device)
            group = hr.index_select(0, rows)
            if k & 1:
                group = group.flip(-1)
            hr.index_copy_(0, rows, torch.rot90(group, k // 2, dims=(-2, -1)))
        if self.degrader is not None:  # codecs and friends run on the CPU, then the pair moves to the device
            lr, hr = self.degrader(hr.cpu(), (seed * 2 + 1) % (2**63))
            lr, hr = lr.to(self.device, non_blocking=True), hr.to(self.device, non_blocking=True)
        else:
            hr = hr.to(self.device, non_blocking=True)
            lr = (degrade_bicubic(hr, self.scale) if self.degradation.name == "bi"
                  else torch.stack([degrade_gaussian(h, self.scale) for h in hr]))
        return lr.float() / 255.0, hr.float() / 127.5 - 1.0

"""Quality benchmarks with the protocol of the SR literature: Vid4, Set5, Set14 or any folder of HR images.

Protocol (stated in every report): PSNR/SSIM on the Y channel of BT.601 (MATLAB ``rgb2ycbcr``, 16-235),
plus RGB PSNR; image sets crop 4 border pixels, Vid4 crops none and averages the per-clip means;
LR inputs are the shipped MATLAB-bicubic x4 files (``bi``) or Gaussian-blur sigma 1.6 + x4 subsampling
(``bd``, Vid4's shipped BDx4 frames); greyscale ground truth is scored on its one channel.
A codec condition (``h264:crf=28``, ``jpeg:q=40``, ... see :mod:`vsr.degrade`) puts that LR through the
codec, deterministically: a video set's clip as one stream (inter-frame coding, like a real file), an
image set's images one by one; bicubic is scored on the same degraded LR. Video sets also get a
flicker figure: the RMS, in Y levels, of the error of the frame-to-frame change, SR(t) - SR(t-1)
against GT(t) - GT(t-1) (0 = the output changes over time exactly as the ground truth does), and,
asked for, VMAF (``vsr.metrics.vmaf``, the optional vmaf-torch package).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from vsr.data import degrade_bicubic, degrade_gaussian, list_images, mod_crop
from vsr.degrade import CodecStep, Condition, parse_condition
from vsr.errors import DataError
from vsr.images import read_image, write_image
from vsr.metrics import imresize, psnr, rgb_to_y, ssim, to_chw_tensor, vmaf, vmaf_version
from vsr.pipeline import Engine

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
VID4_CLIPS = ("calendar", "city", "foliage", "walk")
IMAGE_SETS = ("set5", "set14")


@dataclass
class Item:
    """One clip or image: LR inputs and HR ground truth, as (H, W, 3) uint8 arrays (loaded lazily)."""

    name: str
    lr_paths: list[Path] | None
    hr_paths: list[Path]
    grey: bool = False  # the original ground truth is single-channel: score it on that channel


@dataclass
class Row:
    """Scores of one clip/image (means over its frames)."""

    name: str
    frames: int
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    bicubic_psnr_y: float
    bicubic_ssim_y: float
    seconds: float
    flicker: float | None = None  # video sets: RMS error of the frame-to-frame Y change (levels); lower is better
    bicubic_flicker: float | None = None
    vmaf: float | None = None  # video sets with --vmaf: mean VMAF (0-100, higher is better)
    bicubic_vmaf: float | None = None

    @property
    def gain(self) -> float:
        return self.psnr_y - self.bicubic_psnr_y


@dataclass
class BenchResult:
    dataset: str
    weights: str
    degradation: str
    crop_border: int
    protocol: str
    lr_made_by: str = ""
    device: str = ""
    precision: str = ""
    rows: list[Row] = field(default_factory=list)
    # per item, the middle frame as (LR, SR, HR) uint8 arrays, for comparison pictures
    samples: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def average(self) -> Row:
        """Mean over clips/images (Vid4: mean of per-clip means, as published tables do)."""
        keys = ("psnr_y", "ssim_y", "psnr_rgb", "bicubic_psnr_y", "bicubic_ssim_y")
        means: dict = {k: float(np.mean([getattr(r, k) for r in self.rows])) for k in keys}
        for k in ("flicker", "bicubic_flicker", "vmaf", "bicubic_vmaf"):
            vals = [getattr(r, k) for r in self.rows]
            means[k] = float(np.mean(vals)) if vals and all(v is not None for v in vals) else None
        return Row(name="average", frames=sum(r.frames for r in self.rows), seconds=sum(r.seconds for r in self.rows), **means)

    @property
    def fps(self) -> float:
        avg = self.average()
        return avg.frames / avg.seconds if avg.seconds else 0.0

    def to_dict(self) -> dict:
        avg = self.average()
        return {"dataset": self.dataset, "weights": self.weights, "degradation": self.degradation,
                "crop_border": self.crop_border, "protocol": self.protocol, "lr_made_by": self.lr_made_by,
                "fps": self.fps,
                "device": self.device, "precision": self.precision,
                "rows": [asdict(r) | {"gain": r.gain} for r in self.rows], "average": asdict(avg) | {"gain": avg.gain}}


def _frames(dirpath: Path) -> list[Path]:
    files = sorted(p for p in dirpath.glob("*.png"))
    if not files:
        raise DataError(f"{dirpath}: no PNG frames")
    return files


def discover(dataset: str, data: Path | None, degradation: str) -> tuple[list[Item], int]:
    """The items of a dataset and its border crop; ``dataset`` is vid4, set5, set14 or a folder path;
    ``degradation`` is the LR base, bi or bd."""
    if degradation not in ("bi", "bd"):
        raise DataError(f"--degradation {degradation!r}: choose bi or bd")
    if dataset == "vid4":
        root = (data or DEFAULT_DATA / "vid4")
        if not (root / "GT").is_dir():
            raise DataError(f"{root}: no Vid4 here (expected GT/ and BIx4/ or BDx4/); pass --data PATH")
        lr_dir = "BIx4" if degradation == "bi" else "BDx4"
        items = [Item(c, _frames(root / lr_dir / c), _frames(root / "GT" / c)) for c in VID4_CLIPS]
        for it in items:
            if len(it.lr_paths) != len(it.hr_paths):
                raise DataError(f"{root}: {it.name} has {len(it.lr_paths)} LR but {len(it.hr_paths)} GT frames")
        return items, 0
    if dataset in IMAGE_SETS:
        root = data or DEFAULT_DATA / dataset
        if not (root / "GTmod12").is_dir():
            raise DataError(f"{root}: no {dataset} here (expected GTmod12/ and LRbicx4/); pass --data PATH")
        hr = _frames(root / "GTmod12")
        # GTmod12 stores greyscale images as RGB; the original in HR/ tells which ones are greyscale
        grey = {p.stem: _single_channel(root / "HR" / p.name) for p in hr}
        lr = (lambda p: [root / "LRbicx4" / p.name]) if degradation == "bi" else (lambda p: None)
        return [Item(p.stem, lr(p), [p], grey=grey[p.stem]) for p in hr], 4
    folder = Path(dataset) if data is None else data
    if not folder.is_dir():
        raise DataError(f"{dataset}: not vid4, set5, set14 or a folder of HR images")
    return [Item(p.stem, None, [p], grey=_single_channel(p)) for p in list_images([folder])], 4


def _single_channel(path: Path) -> bool:
    return path.is_file() and read_image(path).grey


def _pairs(item: Item, degradation: str, scale: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i, hr_path in enumerate(item.hr_paths):
        hr = read_image(hr_path).rgb
        if item.lr_paths is not None:
            yield read_image(item.lr_paths[i]).rgb, hr
            continue
        hr_t = mod_crop(to_chw_tensor(hr), scale)
        lr_t = degrade_bicubic(hr_t, scale) if degradation == "bi" else degrade_gaussian(hr_t, scale)
        yield lr_t.permute(1, 2, 0).numpy(), hr_t.permute(1, 2, 0).numpy()


def _score(sr: np.ndarray, hr: np.ndarray, crop: int, grey: bool) -> tuple[float, float, float]:
    """(PSNR-Y, SSIM-Y, PSNR-RGB); a greyscale ground truth is scored on its one channel."""
    if grey:
        a = torch.from_numpy(cv2.cvtColor(sr, cv2.COLOR_RGB2GRAY))[None]
        b = torch.from_numpy(np.ascontiguousarray(hr[..., 0]))[None]
        p = psnr(a, b, crop_border=crop)
        return p, ssim(a, b, crop_border=crop), p
    a, b = to_chw_tensor(sr), to_chw_tensor(hr)
    return (psnr(a, b, crop_border=crop), ssim(a, b, crop_border=crop),
            psnr(a, b, crop_border=crop, y_channel=False))


def flicker(frames: list[np.ndarray], gt: list[np.ndarray]) -> float | None:
    """RMS (Y levels, 0-255) of (X(t) - X(t-1)) - (GT(t) - GT(t-1)) over a clip; None for fewer than 2 frames."""
    if len(frames) < 2:
        return None
    y = [rgb_to_y(to_chw_tensor(f).to(torch.float64)) for f in frames]
    g = [rgb_to_y(to_chw_tensor(f).to(torch.float64)) for f in gt]
    err = [((y[t] - y[t - 1]) - (g[t] - g[t - 1])).pow(2).mean() for t in range(1, len(y))]
    return float(torch.stack(err).mean().sqrt())


def run(dataset: str, engine: Engine, *, weights_name: str, data: Path | None = None, degradation: str | Condition = "bi",
        save_frames: Path | None = None, with_vmaf: bool = False) -> BenchResult:
    """Upscale every clip/image with ``engine`` (frames fed as a sequence) and score it against the ground truth;
    ``with_vmaf`` (video sets): VMAF too, of the model and of bicubic."""
    cond = parse_condition(degradation) if isinstance(degradation, str) else degradation
    video = dataset == "vid4"
    if with_vmaf and not video:
        raise DataError(f"--vmaf is for video sets (vid4), not {dataset}: VMAF's motion feature needs a clip")
    items, crop = discover(dataset, data, cond.base)
    scale = engine.upscaler.scale
    if scale != 4 and any(it.lr_paths is not None for it in items):
        raise DataError(f"{dataset}: its LR inputs are x4 and {weights_name} is a x{scale} model; bench it on a "
                        "folder of HR images (vsr bench DIR), whose LR is made by bicubic 1/scale")
    protocol = (f"Y = BT.601 luma (MATLAB rgb2ycbcr, 16-235); crop {crop} px border; "
                f"{'mean of per-clip means' if video else 'mean over images'}; "
                "greyscale GT scored on its one channel"
                + ("; flicker = RMS of the frame-difference error on Y (levels)" if video else "")
                + (f"; VMAF = vmaf-torch {vmaf_version()} (model v0.6.1, clipped to 0-100) on that Y at the GT's "
                   "size, no crop, motion from the GT, mean over frames" if with_vmaf else ""))
    coded = any(isinstance(st, CodecStep) for st in cond.steps)
    lr_made_by = cond.describe() + (" (video codec over each whole clip)" if video and coded else
                                    " (per image)" if cond.steps and not video else "")
    result = BenchResult(dataset=dataset, weights=weights_name, degradation=cond.label, crop_border=crop,
                         protocol=protocol, lr_made_by=lr_made_by, device=str(engine.upscaler.device),
                         precision=engine.upscaler.precision)
    for item in items:
        pairs = list(_pairs(item, cond.base, scale))
        if cond.steps:
            lrs = cond.apply([lr for lr, _ in pairs]) if video else [cond.apply([lr])[0] for lr, _ in pairs]
            pairs = [(lr, hr) for lr, (_, hr) in zip(lrs, pairs)]
        start = time.perf_counter()
        outputs = list(engine.upscale_frames(lr for lr, _ in pairs))
        seconds = time.perf_counter() - start
        scores, bic, bic_frames = [], [], []
        for k, ((lr, hr), sr) in enumerate(zip(pairs, outputs)):
            if sr.shape != hr.shape:
                raise DataError(f"{item.name}: output {sr.shape} does not match ground truth {hr.shape}")
            scores.append(_score(sr, hr, crop, item.grey))
            up = imresize(to_chw_tensor(lr), float(scale)).permute(1, 2, 0).numpy()
            bic.append(_score(up, hr, crop, item.grey)[:2])
            if video:
                bic_frames.append(up)
            if save_frames is not None:
                out_dir = save_frames / dataset.replace("/", "_") / item.name
                if cond.label != "bi":  # one folder per condition, so repeated --degradation never overwrite
                    out_dir = out_dir.parent / cond.label.replace(":", "_").replace(",", "_") / item.name
                out_dir.mkdir(parents=True, exist_ok=True)
                write_image(out_dir / f"{k:08d}.png", sr)
        mid = len(pairs) // 2
        result.samples[item.name] = (pairs[mid][0], outputs[mid], pairs[mid][1])
        s, b = np.array(scores), np.array(bic)
        gts = [hr for _, hr in pairs]
        result.rows.append(Row(name=item.name, frames=len(pairs), psnr_y=float(s[:, 0].mean()),
                               ssim_y=float(s[:, 1].mean()), psnr_rgb=float(s[:, 2].mean()),
                               bicubic_psnr_y=float(b[:, 0].mean()), bicubic_ssim_y=float(b[:, 1].mean()),
                               seconds=seconds, flicker=flicker(outputs, gts) if video else None,
                               bicubic_flicker=flicker(bic_frames, gts) if video else None,
                               vmaf=vmaf(outputs, gts) if with_vmaf else None,
                               bicubic_vmaf=vmaf(bic_frames, gts) if with_vmaf else None))
    return result


def format_table(result: BenchResult) -> str:
    """A Markdown table of the per-item rows and the average, with the protocol and the LR's making underneath."""
    video = any(r.flicker is not None for r in result.rows)
    head = "| item | frames | PSNR-Y | SSIM-Y | PSNR-RGB | bicubic PSNR-Y | bicubic SSIM-Y | gain (dB) |"
    rule = "|---|---|---|---|---|---|---|---|"
    if video:
        head += " flicker | bicubic flicker |"
        rule += "---|---|"
    scored = any(r.vmaf is not None for r in result.rows)
    if scored:
        head += " VMAF | bicubic VMAF |"
        rule += "---|---|"
    lines = [f"{result.dataset} x4 ({result.degradation.upper()}), weights {result.weights}", head, rule]
    for r in [*result.rows, result.average()]:
        name = f"**{r.name}**" if r.name == "average" else r.name
        line = (f"| {name} | {r.frames} | {r.psnr_y:.2f} | {r.ssim_y:.4f} | {r.psnr_rgb:.2f} | "
                f"{r.bicubic_psnr_y:.2f} | {r.bicubic_ssim_y:.4f} | {r.gain:+.2f} |")
        if video:
            line += f" {r.flicker:.2f} | {r.bicubic_flicker:.2f} |"
        if scored:
            line += f" {r.vmaf:.2f} | {r.bicubic_vmaf:.2f} |"
        lines.append(line)
    lines.append(f"protocol: {result.protocol}")
    if result.lr_made_by:
        lines.append(f"LR: {result.lr_made_by}")
    lines.append(f"speed: {result.fps:.2f} frames/s (model incl. transfers; device {result.device}, "
                 f"precision {result.precision})")
    return "\n".join(lines)


def format_summary(results: list[BenchResult], metric: str = "psnr_y") -> str:
    """One row per model (and bicubic) with the average ``metric`` (psnr_y, or vmaf when it was measured) under
    each condition, and their mean."""
    conditions = list(dict.fromkeys(r.degradation for r in results))
    models = list(dict.fromkeys(r.weights for r in results))
    by = {(r.weights, r.degradation): r.average() for r in results}
    title = {"psnr_y": "PSNR-Y (dB)", "vmaf": "VMAF"}[metric]
    lines = [f"summary: {results[0].dataset} average {title} per condition",
             "| model | " + " | ".join(conditions) + " | mean |", "|---|" + "---|" * (len(conditions) + 1)]

    def row(name: str, vals: list[float | None]) -> str:
        cells = [f"{v:.2f}" if v is not None else "-" for v in vals]
        known = [v for v in vals if v is not None]
        mean = f"{np.mean(known):.2f}" if len(known) == len(vals) else "-"
        return f"| {name} | " + " | ".join(cells) + f" | {mean} |"

    first = {c: next(r for r in results if r.degradation == c).average() for c in conditions}
    lines.append(row("bicubic", [getattr(first[c], f"bicubic_{metric}") for c in conditions]))
    for m in models:
        lines.append(row(m, [getattr(by[(m, c)], metric) if (m, c) in by else None for c in conditions]))
    return "\n".join(lines)

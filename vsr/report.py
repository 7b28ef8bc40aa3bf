"""A small self-contained HTML benchmark report: the tables, a bar chart of per-item PSNR-Y (inline SVG)
and comparison crops LR | bicubic | model(s) | HR as PNGs beside it."""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from vsr.atomic import atomic_output
from vsr.images import write_image
from vsr.metrics import imresize

if TYPE_CHECKING:  # the trainer draws pictures with this module and needs no video stack
    from vsr.bench import BenchResult

CROP = 120  # HR pixels shown per comparison panel
COLOURS = ("#9e9e9e", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def detail_window(hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner (y, x), on the LR grid x4, of the ``size`` window with the most texture in ``hr``."""
    grey = cv2.cvtColor(hr, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
    size = min(size, hr.shape[0], hr.shape[1])
    box = cv2.boxFilter(energy, -1, (size, size), normalize=True, borderType=cv2.BORDER_CONSTANT)
    h, w = grey.shape
    half = size // 2
    inner = box[half : h - size + half + 1, half : w - size + half + 1]
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return (y // 4) * 4, (x // 4) * 4


def _label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((18, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text[:24], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def comparison(lr: np.ndarray, hr: np.ndarray, outputs: list[tuple[str, np.ndarray]], scale: int = 4) -> np.ndarray:
    """One strip: LR (nearest x4) | bicubic | each model | HR, cropped to the most detailed window (RGB)."""
    y, x = detail_window(hr, CROP)
    size = min(CROP, hr.shape[0], hr.shape[1])
    ly, lx, ls = y // scale, x // scale, size // scale
    lr_crop = cv2.resize(lr[ly : ly + ls, lx : lx + ls], (ls * scale, ls * scale), interpolation=cv2.INTER_NEAREST)
    bic = imresize(torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1), float(scale)).permute(1, 2, 0).numpy()
    panels = [("LR (nearest)", lr_crop), ("bicubic", bic[y : y + ls * scale, x : x + ls * scale])]
    panels += [(name, sr[y : y + ls * scale, x : x + ls * scale]) for name, sr in outputs]
    panels.append(("HR", hr[y : y + ls * scale, x : x + ls * scale]))
    sep = np.full((ls * scale + 18, 4, 3), 255, np.uint8)
    strip = []
    for name, img in panels:
        strip += [_label(np.ascontiguousarray(img), name), sep]
    return np.hstack(strip[:-1])


def bar_chart(results: list[BenchResult]) -> str:
    """Grouped bars of per-item PSNR-Y: bicubic, then each model (inline SVG)."""
    names = [r.name for r in results[0].rows]
    series = [("bicubic", [r.bicubic_psnr_y for r in results[0].rows])]
    series += [(res.weights, [r.psnr_y for r in res.rows]) for res in results]
    values = [v for _, vals in series for v in vals]
    lo, hi = np.floor(min(values) - 1), np.ceil(max(values) + 0.5)
    group_w, bar_w, height, top, left = 22 * len(series) + 16, 20, 220, 20, 40
    width = left + group_w * len(names) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 60}" font-size="11">']
    for t in np.arange(lo, hi + 0.01, 1 if hi - lo <= 10 else 2):
        yy = top + height * (1 - (t - lo) / (hi - lo))
        parts.append(f'<line x1="{left}" x2="{width}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
                     f'<text x="2" y="{yy + 4:.1f}">{t:.0f}</text>')
    for i, name in enumerate(names):
        x0 = left + i * group_w + 8
        for j, (sname, vals) in enumerate(series):
            h = height * (vals[i] - lo) / (hi - lo)
            parts.append(f'<rect x="{x0 + j * 22}" y="{top + height - h:.1f}" width="{bar_w}" height="{h:.1f}" '
                         f'fill="{COLOURS[j % len(COLOURS)]}"><title>{html.escape(sname)}: {vals[i]:.2f} dB</title></rect>')
        parts.append(f'<text x="{x0}" y="{top + height + 14}">{html.escape(name[:12])}</text>')
    for j, (sname, _) in enumerate(series):
        parts.append(f'<rect x="{left + j * 150}" y="{top + height + 28}" width="10" height="10" fill="{COLOURS[j % len(COLOURS)]}"/>'
                     f'<text x="{left + j * 150 + 14}" y="{top + height + 37}">{html.escape(Path(sname).name[:22])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(res: BenchResult) -> str:
    extra = [(k, label) for k, label in (("flicker", "flicker"), ("bicubic_flicker", "bicubic flicker"), ("vmaf", "VMAF"),
                                         ("bicubic_vmaf", "bicubic VMAF")) if any(getattr(r, k) is not None for r in res.rows)]
    head = ("<tr><th>item</th><th>frames</th><th>PSNR-Y</th><th>SSIM-Y</th><th>PSNR-RGB</th><th>bicubic PSNR-Y</th><th>gain</th>"
            + "".join(f"<th>{label}</th>" for _, label in extra) + "</tr>")
    rows = []
    for r in [*res.rows, res.average()]:
        rows.append(f"<tr><td>{html.escape(r.name)}</td><td>{r.frames}</td><td>{r.psnr_y:.2f}</td><td>{r.ssim_y:.4f}</td>"
                    f"<td>{r.psnr_rgb:.2f}</td><td>{r.bicubic_psnr_y:.2f}</td><td>{r.gain:+.2f}</td>"
                    + "".join(f"<td>{getattr(r, k):.2f}</td>" for k, _ in extra) + "</tr>")
    return (f"<h3>{html.escape(res.weights)}</h3><table>{head}{''.join(rows)}</table>"
            f"<p>speed {res.fps:.2f} frames/s, device {html.escape(res.device)}, precision {html.escape(res.precision)}</p>")


def write_report(results: list[BenchResult], out_dir: Path) -> Path:
    """Write ``index.html`` and one comparison PNG per clip/image into ``out_dir``; returns the page path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    first = results[0]
    figures = []
    for name in [r.name for r in first.rows]:
        lr, _, hr = first.samples[name]
        strip = comparison(lr, hr, [(Path(res.weights).stem, res.samples[name][1]) for res in results])
        png = f"compare_{name}.png"
        write_image(out_dir / png, strip)
        figures.append(f'<figure><img src="{png}" alt="{html.escape(name)}"><figcaption>{html.escape(name)} '
                       "(middle frame; the most textured window)</figcaption></figure>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>vsr bench {html.escape(first.dataset)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
img{{image-rendering:pixelated;max-width:100%}}</style></head><body>
<h1>vsr bench: {html.escape(first.dataset)} x4 ({first.degradation.upper()})</h1>
<p>Protocol: {html.escape(first.protocol)}</p>
{''.join(_table(r) for r in results)}
<h2>PSNR-Y per item</h2>{bar_chart(results)}
<h2>Comparisons: LR | bicubic | model(s) | HR</h2>{''.join(figures)}
</body></html>"""
    page_path = out_dir / "index.html"
    with atomic_output(page_path) as tmp:
        tmp.write_text(page)
    return page_path


def line_plot(series: dict[str, list[tuple[int, float]]], path: Path, *, title: str = "",
              size: tuple[int, int] = (720, 400)) -> Path:
    """A plain line chart (x = step) drawn with OpenCV (in RGB), one colour per series, written as PNG."""
    w, h = size
    left, right, top, bottom = 60, 20, 30, 50
    img = np.full((h, w, 3), 255, np.uint8)
    points = [p for pts in series.values() for p in pts]
    if points:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        x0, x1 = min(xs), max(max(xs), min(xs) + 1)
        y0, y1 = np.floor(min(ys)), np.ceil(max(ys) + 1e-6)
        y1 = max(y1, y0 + 1)

        def at(x: float, y: float) -> tuple[int, int]:
            return (int(left + (x - x0) / (x1 - x0) * (w - left - right)),
                    int(top + (1 - (y - y0) / (y1 - y0)) * (h - top - bottom)))

        for t in np.linspace(y0, y1, 6):
            _, yy = at(x0, t)
            cv2.line(img, (left, yy), (w - right, yy), (235, 235, 235), 1)
            cv2.putText(img, f"{t:.1f}", (5, yy + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for t in np.linspace(x0, x1, 5):
            xx, _ = at(t, y0)
            cv2.putText(img, f"{int(t)}", (xx - 15, h - bottom + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for i, (name, pts) in enumerate(series.items()):
            colour = tuple(int(COLOURS[(i + 1) % len(COLOURS)][k : k + 2], 16) for k in (1, 3, 5))  # RGB
            pts = sorted(pts)
            for a, b in zip(pts, pts[1:]):
                cv2.line(img, at(*a), at(*b), colour, 2, cv2.LINE_AA)
            for p in pts:
                cv2.circle(img, at(*p), 2, colour, -1)
            cv2.putText(img, name, (left + 10 + 260 * i, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    cv2.putText(img, title + "   (x: step)", (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return write_image(path, img)

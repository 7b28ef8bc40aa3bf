"""How much fine texture each model draws, against the ground truth: a number beside the comparison grids.

    python benchmarks/texture.py set14 --weights srresnet-mse --weights srgan-perpix

For every HR image of the set, the LR is made with MATLAB bicubic x1/4 (as `vsr bench`), upscaled by
each model (and by bicubic), and the mean absolute Laplacian of the Y channel (4-px border cropped)
is divided by that of the HR image. 1.0 = as much high-frequency energy as the ground truth; MSE
models land well below 1 (they average plausible textures into blur); a perceptual/GAN model
should land closer to 1. It says nothing about whether the texture is the right one: PSNR does that.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from vsr.bench import discover
from vsr.device import resolve_device, resolve_precision
from vsr.images import read_image
from vsr.inference import Upscaler
from vsr.metrics import imresize, rgb_to_y, to_chw_tensor
from vsr.weights import load


def laplacian_energy(rgb: torch.Tensor) -> float:
    """Mean |Laplacian| of the BT.601 Y of a (3, H, W) image in [0, 255], 4-px border cropped."""
    y = rgb_to_y(rgb.to(torch.float64)).numpy()
    return float(np.abs(cv2.Laplacian(y, cv2.CV_64F, ksize=3))[4:-4, 4:-4].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=["set5", "set14"])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--weights", action="append", default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    weights = args.weights or ["srresnet-mse", "srgan-perpix"]
    device = resolve_device(args.device)
    precision = resolve_precision(device, "auto")
    items, _ = discover(args.dataset, args.data, "bi")  # the set's own GTmod12 / LRbicx4 pairs, as vsr bench
    ups = {w: Upscaler(load(w).model, device=device, precision=precision) for w in weights}
    rows: dict[str, list[float]] = {"bicubic": [], **{w: [] for w in weights}}
    names = []
    for item in items:
        lr, hr = read_image(item.lr_paths[0]).rgb, to_chw_tensor(read_image(item.hr_paths[0]).rgb)
        ref = laplacian_energy(hr)
        names.append(item.name)
        rows["bicubic"].append(laplacian_energy(imresize(to_chw_tensor(lr), 4.0)) / ref)
        for w, up in ups.items():
            sr = to_chw_tensor(up.upscale(lr[None])[0])
            rows[w].append(laplacian_energy(sr) / ref)
    print(f"{args.dataset}: mean |Laplacian of Y| of the 4x picture over that of the HR (1.0 = as much fine "
          f"texture as the ground truth); device {device}, precision {precision}\n")
    print("| item | " + " | ".join(rows) + " |\n|---|" + "---|" * len(rows))
    for i, name in enumerate(names):
        print(f"| {name} | " + " | ".join(f"{v[i]:.2f}" for v in rows.values()) + " |")
    print("| **mean** | " + " | ".join(f"**{np.mean(v):.2f}**" for v in rows.values()) + " |")


if __name__ == "__main__":
    main()

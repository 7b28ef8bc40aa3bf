"""Vid4 (BIx4) Y-PSNR of weights files, a temporal model streamed frame by frame in order through
``Upscaler.upscale_stream`` (an image model through ``upscale``): BT.601 Y, no border crop, mean of per-clip
means, as ``vsr bench vid4`` scores. Prints one JSON line per weights file.

    python scripts/vid4_stream.py WEIGHTS [WEIGHTS ...] [--data ../shared/datasets/vid4] [--precision fp32]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from vsr.bench import VID4_CLIPS
from vsr.images import read_image
from vsr.inference import Upscaler
from vsr.metrics import psnr, to_chw_tensor
from vsr.weights import load


def score(weights: str, data: Path, precision: str, device: torch.device) -> dict:
    loaded = load(weights)
    up = Upscaler(loaded.model, device=device, precision=precision, descriptor=loaded.descriptor)
    clips, start = {}, time.perf_counter()
    for clip in VID4_CLIPS:
        lrs = sorted((data / "BIx4" / clip).glob("*.png"))
        gts = sorted((data / "GT" / clip).glob("*.png"))
        state, scores = None, []
        for lr_path, gt_path in zip(lrs, gts, strict=True):
            lr = read_image(lr_path).rgb
            if loaded.descriptor.temporal:
                out, state = up.upscale_stream(lr[None], state)
            else:
                out = up.upscale(lr[None])
            scores.append(psnr(to_chw_tensor(out[0]), to_chw_tensor(read_image(gt_path).rgb), crop_border=0))
        clips[clip] = float(np.mean(scores))
    return {"weights": weights, "arch": loaded.descriptor.arch, "vid4_bi_psnr_y": round(float(np.mean(list(clips.values()))), 4),
            "clips": {k: round(v, 4) for k, v in clips.items()}, "precision": precision, "device": str(device),
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "vid4")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    for w in args.weights:
        print(json.dumps(score(w, args.data, args.precision, torch.device(args.device))), flush=True)


if __name__ == "__main__":
    main()

"""What a temporal model's segment warm-up costs in quality: Vid4 cut into segments, each started from a fresh
state W frames early (the engine's ``WARMUP_FRAMES``), against one unbroken stream over the whole clip.

    python benchmarks/warmup_cost.py --weights runs/rnn.pt --warmups 0 1 2 3 5 8 [--every 10] [--crop-lr 88 72]

A segment of a long video starts W frames before its first kept frame (those pictures are dropped), so that
`--jobs`, resume and side-by-side segments can make it alone. For each W the table gives the Y-PSNR (no
border crop, against the ground truth) of the frames of every segment after a clip's first, beside the
same frames of the unbroken stream, and the same for the first kept frame of each segment (where a short
warm-up shows most). Only a model that uses its state shows a cost; for a model that ignores it every W
gives the unbroken stream's figures. ``--crop-lr`` scores a centred LR window (and its 4x GT) to save time.
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch

from vsr.bench import discover
from vsr.images import read_image
from vsr.inference import Upscaler
from vsr.metrics import psnr, to_chw_tensor
from vsr.weights import load


def stream(up: Upscaler, frames: list[np.ndarray]) -> list[np.ndarray]:
    """One unbroken stream from a fresh state."""
    state, out = None, []
    for f in frames:
        y, state = up.upscale_stream(f[None], state)
        out.append(y[0])
    return out


def y_psnr(sr: np.ndarray, gt: np.ndarray) -> float:
    return psnr(to_chw_tensor(sr), to_chw_tensor(gt))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", required=True, help="a temporal model's weights")
    ap.add_argument("--data", type=Path, default=None, help="Vid4 (GT/, BIx4/); default ../shared/datasets/vid4")
    ap.add_argument("--warmups", type=int, nargs="+", default=[0, 1, 2, 3, 5, 8])
    ap.add_argument("--every", type=int, default=10, help="frames per segment")
    ap.add_argument("--crop-lr", type=int, nargs=2, metavar=("W", "H"), default=None)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()
    loaded = load(args.weights)
    if not loaded.descriptor.temporal:
        raise SystemExit(f"{args.weights}: not a temporal model")
    up = Upscaler(loaded.model, device=torch.device("cpu"), precision=args.precision)
    items, _ = discover("vid4", args.data, "bi")
    print(f"{args.weights}; Vid4 BIx4, segments of {args.every} frames; "
          f"{'LR window ' + 'x'.join(map(str, args.crop_lr)) if args.crop_lr else 'whole frames'}; CPU "
          f"({platform.processor() or platform.machine()}), {args.precision}, torch threads {torch.get_num_threads()}")
    # per clip: LR, GT, the unbroken stream's per-frame PSNR
    clips = []
    for it in items:
        lr = [read_image(p).rgb for p in it.lr_paths]
        gt = [read_image(p).rgb for p in it.hr_paths]
        if args.crop_lr:
            w, h = args.crop_lr
            y0, x0 = (lr[0].shape[0] - h) // 2, (lr[0].shape[1] - w) // 2
            lr = [np.ascontiguousarray(f[y0:y0 + h, x0:x0 + w]) for f in lr]
            gt = [np.ascontiguousarray(f[4 * y0:4 * (y0 + h), 4 * x0:4 * (x0 + w)]) for f in gt]
        whole = [y_psnr(s, g) for s, g in zip(stream(up, lr), gt)]
        clips.append((it.name, lr, gt, whole))
    starts = {}
    for name, lr, _, _ in clips:  # as plan_segments cuts: a tail under half a segment joins the last one
        at = list(range(args.every, len(lr), args.every))
        if at and len(lr) - at[-1] < args.every // 2:
            at.pop()
        starts[name] = at
    print(f"{sum(map(len, starts.values()))} segment starts; frames scored: "
          f"{sum(len(lr) - at[0] for (_, lr, _, _), at in zip(clips, starts.values()) if at)}")
    print("| warm-up W | segment frames (dB) | unbroken stream, same frames | cost | first frame of a segment | "
          "unbroken, same frames | cost |")
    print("|---|---|---|---|---|---|---|")
    for warm in args.warmups:
        seg, ref, first, first_ref = [], [], [], []
        for name, lr, gt, whole in clips:
            for s in starts[name]:
                later = [t for t in starts[name] if t > s]
                end = later[0] if later else len(lr)
                begin = max(0, s - warm)
                out = stream(up, lr[begin:end])[s - begin:]
                scores = [y_psnr(o, g) for o, g in zip(out, gt[s:end])]
                seg += scores
                ref += whole[s:end]
                first.append(scores[0])
                first_ref.append(whole[s])
        m = lambda v: float(np.mean(v))  # noqa: E731
        print(f"| {warm} | {m(seg):.3f} | {m(ref):.3f} | {m(ref) - m(seg):+.3f} | {m(first):.3f} | {m(first_ref):.3f} | "
              f"{m(first_ref) - m(first):+.3f} |", flush=True)


if __name__ == "__main__":
    main()

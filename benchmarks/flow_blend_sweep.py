"""Sweep the fixed blend of `flow-srresnet` (alpha, sigma) on held-out clips, not on the benchmark.

The SRResNet's picture of every frame is computed once; each setting then reruns only the blend (the real
``FlowFusedSRResNet.forward``, its core replaced by a replay of those pictures), so a grid costs little more than
one pass. Score: the trainer's validation figure (mean over clips of the per-clip mean Y-PSNR, 4-px crop), for
clean bicubic LR and, with ``--degradation``, a bench condition run over each whole clip.

    OMP_NUM_THREADS=1 python benchmarks/flow_blend_sweep.py --clips data/val-clips --weights srresnet-mse \
        --alpha 0.25 0.5 0.65 0.8 --sigma 4 8 16 --degradation h264:crf=28
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch
from torch import nn

from vsr import weights as weights_io
from vsr.data import degrade_bicubic, mod_crop
from vsr.degrade import parse_condition
from vsr.metrics import psnr
from vsr.models.flowfuse import FlowFusedSRResNet
from vsr.trainer import load_val_clips


class Replay(nn.Module):
    """A stand-in core that returns the given pictures in order (the SRResNet's, computed once)."""

    def __init__(self, pictures: list[torch.Tensor]) -> None:
        super().__init__()
        self.pictures, self.i = pictures, 0

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        out = self.pictures[self.i]
        self.i += 1
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", required=True, help="folder of validation clips (folders of frames)")
    ap.add_argument("--weights", default="srresnet-mse", help="an SRResNet weights file or name")
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.25, 0.5, 0.65, 0.8])
    ap.add_argument("--sigma", type=float, nargs="+", default=[4.0, 8.0, 16.0])
    ap.add_argument("--degradation", default=None, help="a bench condition, e.g. h264:crf=28 (default: clean BI)")
    args = ap.parse_args()
    core = weights_io.load(args.weights).model.eval()
    condition = parse_condition(args.degradation) if args.degradation else None
    clips = []
    for clip in load_val_clips(args.clips):
        hrs = [mod_crop(hr, 4) for hr in clip]
        lrs = [degrade_bicubic(hr, 4).permute(1, 2, 0).numpy() for hr in hrs]
        if condition is not None:
            lrs = condition.apply(lrs)
        lrs = [torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].float() / 255 for lr in lrs]
        with torch.no_grad():
            pictures = [core(lr).float() for lr in lrs]
        clips.append((lrs, hrs, pictures))
    print(f"{args.weights}, {len(clips)} clips, {args.degradation or 'bi'}: mean Y-PSNR (4-px crop)")
    for alpha, sigma in itertools.chain([(0.0, 8.0)], itertools.product(args.alpha, args.sigma)):
        means = []
        for lrs, hrs, pictures in clips:
            model = FlowFusedSRResNet(num_blocks=1, channels=4, alpha=alpha, sigma=sigma).eval()
            model.core = Replay(pictures)
            state, scores = None, []
            with torch.no_grad():
                for lr, hr in zip(lrs, hrs):
                    out, state = model(lr, state)
                    sr = ((out[0] + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)
                    scores.append(psnr(sr, hr, crop_border=4))
            means.append(np.mean(scores))
        label = "per frame (alpha 0)" if alpha == 0 else f"alpha {alpha:g} sigma {sigma:g}"
        print(f"{label}: {np.mean(means):.3f}  (per clip {' '.join(f'{m:.2f}' for m in means)})", flush=True)


if __name__ == "__main__":
    main()

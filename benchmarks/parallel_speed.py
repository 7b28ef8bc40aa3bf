"""End-to-end frames/s of `vsr upscale` with N segment workers (`--jobs`) against one, and against model-only.

    python benchmarks/parallel_speed.py --size 960x540 --frames 240 --jobs 1 4 8 --preset medium   # a GPU box
    python benchmarks/parallel_speed.py --size 180x144 --frames 100 --jobs 1 2 --tiny              # a smoke run

On a GPU machine one x264 instance cannot keep up with the model at 4K out; several segment workers run
several encoders. Each run is the real command (a child process: workers spawned, model loaded, the join
included) on the same synthetic clip, in one session, so the ratios hold on a noisy machine. Model-only is
the generator's throughput on frames already in memory (as in `upscale_speed.py`); efficiency = end-to-end /
model-only. Prints a Markdown table with the settings.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from upscale_speed import model_only_fps  # noqa: E402

from vsr.device import resolve_device, resolve_precision  # noqa: E402
from vsr.inference import Upscaler  # noqa: E402
from vsr.weights import DEFAULT_WEIGHTS, load, save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="960x540", help="input WxH")
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--segment", type=float, default=2.0, help="seconds per segment")
    ap.add_argument("--preset", default="medium", help="x264 preset, the same for every run")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS)
    ap.add_argument("--tiny", action="store_true", help="a tiny random-init model instead of --weights")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    from clips import make_clip

    from vsr.models import SRResNet

    device = resolve_device(args.device)
    precision = resolve_precision(device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = args.weights
        if args.tiny:
            torch.manual_seed(0)
            kw = {"num_blocks": 2, "channels": 16, "scale": 4}
            weights = str(save(SRResNet(**kw).eval(), tmp / "tiny.pt", meta={"name": "tiny", "arch": "srresnet",
                                                                                 "arch_kwargs": kw}))
        src = make_clip(tmp / "in.mp4", frames=args.frames, width=w, height=h, fps=args.fps, audio="aac")
        up = Upscaler(load(weights).model, device=device, precision=precision)
        import numpy as np

        from clips import frame_image

        frames = np.stack([frame_image(i, w, h) for i in range(4)])
        model_fps = model_only_fps(up, frames, batch=up.auto_batch(h, w) if device.type == "cuda" else 1, repeats=3)
        del up
        rows = []
        for jobs in args.jobs:
            out = tmp / f"out{jobs}.mp4"
            cmd = [sys.executable, "-m", "vsr", "upscale", str(src), "-o", str(out), "--weights", weights,
                   "--device", str(device), "--jobs", str(jobs), "--segment", str(args.segment), "--preset",
                   args.preset, "--codec", "libx264", "-q", "--overwrite"]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            rows.append((jobs, seconds, args.frames / seconds))
    base = rows[0][2]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    print(f"{w}x{h} -> {4 * w}x{4 * h}, {args.frames} frames at {args.fps} fps, segments of {args.segment} s, "
          f"x264 {args.preset}; model {'tiny random' if args.tiny else args.weights} {precision} on {device} "
          f"({name}); model only {model_fps:.1f} fps")
    print()
    print("| --jobs | end to end s | fps | vs --jobs %d | of model-only |" % rows[0][0])
    print("|---|---|---|---|---|")
    for jobs, seconds, fps in rows:
        print(f"| {jobs} | {seconds:.1f} | {fps:.2f} | {fps / base:.2f}x | {fps / model_fps:.0%} |")


if __name__ == "__main__":
    main()

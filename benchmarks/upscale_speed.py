"""Frames per second of `vsr upscale` on a real clip, end to end and model only, per precision.

    python benchmarks/upscale_speed.py --clip samples/calendar.mp4 --precisions fp32 bf16

Both figures come from the same run on the same machine, so their ratio (pipeline efficiency) is
meaningful even on a noisy shared machine. Prints a Markdown table with the settings beside it.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from vsr.device import resolve_device
from vsr.inference import Upscaler
from vsr.pipeline import Engine
from vsr.video import EncodeSettings, Frame, VideoReader
from vsr.weights import DEFAULT_WEIGHTS, load


def model_only_fps(up: Upscaler, frames: np.ndarray, batch: int, repeats: int) -> float:
    """Generator throughput on frames already in memory (uint8 -> device -> model -> uint8)."""
    x = torch.from_numpy(frames[:batch]).to(up.device).permute(0, 3, 1, 2).float().div(255)
    up.run(x)  # warm-up (oneDNN / cuDNN picks kernels)
    if up.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        up.run(x)
    if up.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clip", type=Path, default=Path("samples/calendar.mp4"))
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = resolve_device(args.device)
    with VideoReader(args.clip) as reader:
        frames = np.stack([f.image for f in reader if isinstance(f, Frame)])
    n, h, w, _ = frames.shape
    print(f"clip {args.clip} ({n} frames, {w}x{h}); device {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}); "
          f"torch {torch.__version__}, PyAV {av.__version__}, torch threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, no tiling, the encoder settings `vsr upscale` uses on this device")
    print("| precision | model only (fps) | end to end (fps) | efficiency |")
    print("|---|---|---|---|")
    for precision in args.precisions:
        model = load(args.weights).model
        up = Upscaler(model, device=device, precision=precision)
        m_fps = model_only_fps(up, frames, args.batch_size, args.repeats)
        # the encoder defaults of `vsr upscale` on this device (a faster x264 preset on a GPU)
        engine = Engine(up, batch_size=args.batch_size, settings=EncodeSettings(encoder_bound=device.type == "cuda"))
        with tempfile.TemporaryDirectory() as tmp:
            result = engine.upscale_video(args.clip, Path(tmp) / f"out{args.clip.suffix}")
        print(f"| {precision} | {m_fps:.2f} | {result.fps:.2f} | {result.fps / m_fps:.2f} |")


if __name__ == "__main__":
    main()

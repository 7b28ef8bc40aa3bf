"""Training-degradation throughput beside model training steps, measured in one run on one machine.

    python benchmarks/degrade_speed.py --degradation real --batch-size 16 --crop 96 --seconds 20

Prints crops/s of the degradation chain (one thread) and of the codec part alone, with ``--workers 1 4 8``
the rate at which the trainer's prefetch threads deliver batches, the SRResNet MSE training step rate at
the same batch, and their ratio: above 1 the degradation keeps up with training when it runs ahead.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from vsr.data import CropSampler
from vsr.degrade import parse_degradation
from vsr.device import autocast, resolve_device, resolve_precision
from vsr.models import SRResNet


def _rate(fn, seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += 1
        fn(n)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--degradation", default="real")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for the model step (0 = default)")
    ap.add_argument("--workers", type=int, nargs="*", default=[],
                    help="also the prefetch rate with this many degradation threads (the trainer's --degrade-workers)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = parse_degradation(args.degradation)
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (3, 320, 480), dtype=np.uint8)) for _ in range(8)]
    sampler = CropSampler(images, crop=args.crop, degradation=cfg)
    codec_only = CropSampler(images, crop=args.crop, degradation=dataclasses.replace(
        cfg, clean_prob=0.0, codec_prob=1.0, blur_prob=0.0, noise_prob=0.0, second_pass_prob=0.0)) if not cfg.is_clean else None

    def degrade(step: int) -> None:
        torch.set_num_threads(1)
        sampler.sample(args.batch_size, step)

    deg_bps = _rate(degrade, args.seconds)
    prefetch = {}
    for n in args.workers:  # batches/s as the training loop would get them, with nothing else to do
        pool = CropSampler(images, crop=args.crop, degradation=cfg, workers=n)
        prefetch[n] = _rate(lambda s, pool=pool, n=n: pool.sample_ahead(args.batch_size, range(s, s + n + 1)),
                            args.seconds)
    codec_bps = _rate(lambda s: codec_only.sample(args.batch_size, s), args.seconds) if codec_only else float("nan")
    torch.set_num_threads(args.threads or torch.get_num_threads())

    device = resolve_device(args.device)
    precision = resolve_precision(device, args.precision)
    model = SRResNet().to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    lr, hr = sampler.sample(args.batch_size, 0)
    lr, hr = lr.to(device).contiguous(memory_format=torch.channels_last), hr.to(device)

    def train_step(_: int) -> None:
        with autocast(device, precision):
            sr = model(lr)
        loss = F.mse_loss(sr.float(), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    steps = _rate(train_step, args.seconds)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads for the model, device {device}, precision {precision}")
    print(f"degradation {args.degradation!r}, batch {args.batch_size} x {args.crop}px crops")
    print("| what | batches/s | crops/s |")
    print("|---|---|---|")
    print(f"| degradation chain (1 thread) | {deg_bps:.2f} | {deg_bps * args.batch_size:.1f} |")
    if codec_only:
        print(f"| every group video-coded (1 thread) | {codec_bps:.2f} | {codec_bps * args.batch_size:.1f} |")
    for n, bps in prefetch.items():
        print(f"| prefetched by {n} degradation thread(s) | {bps:.2f} | {bps * args.batch_size:.1f} |")
    print(f"| SRResNet MSE training step | {steps:.2f} | {steps * args.batch_size:.1f} |")
    print(f"ratio degradation / training: {deg_bps / steps:.1f}x "
          f"({'keeps up' if deg_bps >= steps else 'starves training'} with one worker thread)")


if __name__ == "__main__":
    main()

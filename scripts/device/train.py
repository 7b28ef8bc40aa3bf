"""Train inside a fixed wall-time budget (a lent GPU's 10-minute command limit): calibrate the step
rate with a short run, size the real run's cosine schedule to the time left, train, export.

    python scripts/device/train.py --phase mse --budget 330 --data data/train --val data/val \
        --init srresnet-mse --out runs/gpu-mse --export $OUT/srresnet-mse.pt

Everything goes through ``vsr.trainer`` (the same loop as ``vsr train``); this script only picks the
number of steps. With ``--phase perpix`` the Per-Pix stages keep the recipe's proportions
(15k/20k/35k of the run) and generator snapshots are kept at every tenth of the run.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

from vsr.config import TrainConfig
from vsr.trainer import export, train

RECIPE_STAGES = ((15_000 / 35_000, 10, 1), (20_000 / 35_000, 10, 10), (1.0, 1, 10))


def step_rate(run: Path) -> float:
    """Steps per second between the second and the last log row (past start-up and kernel autotuning)."""
    rows = list(csv.DictReader(open(run / "log.csv")))
    (s0, t0), (s1, t1) = [(int(r["step"]), float(r["seconds"])) for r in (rows[1], rows[-1])]
    return (s1 - s0) / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=["mse", "perpix"], required=True)
    ap.add_argument("--budget", type=float, required=True, help="seconds for calibration + training")
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--val", default=None)
    ap.add_argument("--init", default=None)
    ap.add_argument("--vgg-weights", default="data/vgg/vgg19_features_conv54_fp16.pt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--export", required=True, help="weights file for the final generator")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lr-min", type=float, default=1e-6)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--degradation", default="bi", help="as vsr train --degradation (e.g. real:context=2)")
    ap.add_argument("--val-degradation", default=None, help="as vsr train --val-degradation (e.g. h264:crf=28)")
    ap.add_argument("--degrade-workers", type=int, default=0, help="as vsr train --degrade-workers (0 = from the cores)")
    ap.add_argument("--calibrate", type=int, default=300, help="steps of the calibration run")
    ap.add_argument("--reserve", type=float, default=25.0, help="seconds kept for validation and export")
    ap.add_argument("--step-share", type=float, default=None,
                    help="share of the time left that goes to optimiser steps (the rest: validations, snapshots, "
                         "checkpoints); default 0.92 for mse, 0.80 for perpix, whose 0.92-sized run of 2026-11-26 "
                         "ran out of time at 90%% of its schedule")
    args = ap.parse_args()
    start = time.time()

    common = dict(data=args.data, loss=args.phase, init=args.init, vgg_weights=args.vgg_weights,
                  batch_size=args.batch_size, crop=args.crop, lr=args.lr, lr_min=args.lr_min, device=args.device,
                  precision="bf16", degradation=args.degradation, degrade_workers=args.degrade_workers)
    cal_dir = Path(args.out + "-calibration")
    shutil.rmtree(cal_dir, ignore_errors=True)
    train(TrainConfig(**common, out=str(cal_dir), steps=args.calibrate, val_every=0, ckpt_every=10**9,
                      log_every=max(1, args.calibrate // 6), perpix_schedule=f"{args.calibrate}:10:1"), quiet=True)
    rate = step_rate(cal_dir)
    left = args.budget - (time.time() - start) - args.reserve
    share = args.step_share or (0.92 if args.phase == "mse" else 0.80)
    steps = max(args.calibrate, int(share * rate * left))  # the calibration ran without validations or snapshots
    print(f"calibration: {rate:.1f} steps/s at batch {args.batch_size}x{args.crop}px; {left:.0f} s left -> {steps} steps",
          flush=True)

    schedule = ",".join(f"{max(1, round(f * steps))}:{a:g}:{b:g}" for f, a, b in RECIPE_STAGES)
    cfg = TrainConfig(**common, out=args.out, steps=steps, val=args.val, val_degradation=args.val_degradation,
                      val_every=max(1, steps // 10),
                      ckpt_every=max(1, steps // 5), keep_every=max(1, steps // 10) if args.phase == "perpix" else 0,
                      log_every=max(1, steps // 100), perpix_schedule=schedule, max_seconds=left + args.reserve / 2)
    shutil.rmtree(args.out, ignore_errors=True)
    run = train(cfg, quiet=True)
    final = json.loads((run / "final.json").read_text())
    print(f"trained {final['step']} steps in {final['seconds']} s (stopped early: {final['stopped_early']}), "
          f"last validation Y-PSNR {final['val_psnr']}", flush=True)
    export(run, args.export, name=Path(args.export).stem)
    print(f"wrote {args.export}; total {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()

"""What segmented (resumable) upscaling costs against one direct pass, end to end, in one run.

    python benchmarks/segment_overhead.py --clip samples/calendar.mp4 --segment 1 --repeats 2
    python benchmarks/segment_overhead.py --synthetic 300 --tiny --segment 2   # the model nearly free: worst case

``direct`` is a single pass as vsr did before segments (decoder thread -> model -> encoder thread -> the output
file). ``one segment`` and ``N segments`` are `vsr upscale` now: each segment encoded into a packet file in the
work folder, then joined with the audio into the output (more segments: more keyframes, so a few more bytes). The runs alternate (direct, one, N, direct, ...) so that
a noisy machine hits all alike; the table gives the median of each and its ratio to direct, and where the
segmented time goes (planning with the packet scan, making the segments, the join).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vsr.atomic import atomic_output
from vsr.device import resolve_device, resolve_precision
from vsr.inference import Upscaler
from vsr.pipeline import Engine, _ModelStream, _Pump
from vsr.video import ContainerCaps, Frame, VideoReader, VideoWriter, plan_output
from vsr.weights import DEFAULT_WEIGHTS, load


def direct(engine: Engine, src: Path, dst: Path) -> dict[str, float]:
    """One pass with no segments: the pipeline of vsr before resumable output."""
    started, cpu = time.perf_counter(), time.process_time()
    with VideoReader(src) as reader:
        plan = plan_output(reader.info, ContainerCaps.for_path(dst), scale=engine.upscaler.scale,
                           settings=engine.settings)
        batch_size = engine.batch_for(reader.info.height, reader.info.width)
        stream = _ModelStream(engine, engine.output_target(plan))
        with atomic_output(dst) as tmp, VideoWriter(tmp, plan, reader.sources) as writer, \
                _Pump(reader, writer, depth=2 * batch_size + 2, progress=None) as pump:
            batch: list[Frame] = []
            for item in pump.items():
                if not isinstance(item, Frame):
                    pump.send(item)
                    continue
                batch.append(item)
                if len(batch) >= batch_size:
                    for f in stream.frames(batch):
                        pump.send(f)
                    batch = []
            for f in stream.frames(batch) if batch else ():
                pump.send(f)
            pump.drain()
            writer.finish()
    return {"total": time.perf_counter() - started, "cpu": time.process_time() - cpu, "bytes": dst.stat().st_size}


def segmented(engine: Engine, src: Path, dst: Path, seconds: float) -> dict[str, float]:
    """`Engine.upscale_video`, phase by phase."""
    engine.segment_seconds = seconds
    t0, cpu = time.perf_counter(), time.process_time()
    job = engine.prepare_video(src, dst, overwrite=True)
    t1 = time.perf_counter()
    for seg in job.pending:
        job.records[seg.index] = engine.run_segment(job.task(seg))
    t2 = time.perf_counter()
    engine.finish_video(job)
    t3 = time.perf_counter()
    return {"total": t3 - t0, "cpu": time.process_time() - cpu, "plan": t1 - t0, "segments": t2 - t1, "join": t3 - t2, "n": len(job.segments),
            "bytes": dst.stat().st_size}


def synthetic_clip(path: Path, frames: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from clips import make_clip

    return make_clip(path, frames=frames, width=180, height=144, fps=25, audio="aac")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=Path("samples/calendar.mp4"))
    ap.add_argument("--synthetic", type=int, default=0, help="instead of --clip: a 180x144 25 fps clip of N frames")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS)
    ap.add_argument("--tiny", action="store_true", help="a tiny random-init model (the model nearly free)")
    ap.add_argument("--segment", type=float, default=1.0, help="seconds per segment of the many-segment runs")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()

    device = resolve_device(args.device)
    precision = resolve_precision(device, args.precision)
    if args.tiny:
        from vsr.models import SRResNet

        torch.manual_seed(0)
        model, name = SRResNet(num_blocks=2, channels=16, scale=4).eval(), "tiny random SRResNet (2x16)"
    else:
        model, name = load(args.weights).model, args.weights
    engine = Engine(Upscaler(model, device=device, precision=precision))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = synthetic_clip(tmp / "in.mp4", args.synthetic) if args.synthetic else args.clip
        with VideoReader(src) as r:
            info = r.info
        runs: dict[str, list[dict[str, float]]] = {"direct": [], "one segment": [], "segments": []}
        for _ in range(args.repeats):
            runs["direct"].append(direct(engine, src, tmp / "direct.mp4"))
            runs["one segment"].append(segmented(engine, src, tmp / "one.mp4", 0))
            runs["segments"].append(segmented(engine, src, tmp / "many.mp4", args.segment))

    base = statistics.median(r["total"] for r in runs["direct"])
    print(f"clip: {src.name if not args.synthetic else 'synthetic'} {info.width}x{info.height}, "
          f"{info.expected_frames} frames at {float(info.fps):g} fps; model {name}; device {device} {precision}; "
          f"{torch.get_num_threads()} threads; {platform.processor() or platform.machine()}; "
          f"{args.repeats} run(s) each, medians")
    print()
    cpu_base = statistics.median(r["cpu"] for r in runs["direct"])
    print("| mode | segments | end to end s | vs direct | CPU s | vs direct | plan s | segments s | join s "
          "| output bytes vs direct |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, rs in runs.items():
        total = statistics.median(r["total"] for r in rs)
        parts = [f"{statistics.median(r[k] for r in rs):.2f}" if k in rs[0] else "" for k in ("plan", "segments", "join")]
        n = int(rs[0].get("n", 1))
        size = rs[0]["bytes"] / runs["direct"][0]["bytes"]
        cpu = statistics.median(r["cpu"] for r in rs)
        print(f"| {mode} | {n} | {total:.2f} | {total / base:.3f} | {cpu:.2f} | {cpu / cpu_base:.3f} | "
              + " | ".join(parts) + f" | {size:.3f} |")


if __name__ == "__main__":
    main()

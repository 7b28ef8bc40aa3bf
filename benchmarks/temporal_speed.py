"""End-to-end `vsr upscale` speed of a temporal (recurrent) model against the single-frame one, in one run.

    python benchmarks/temporal_speed.py --clip samples/calendar.mp4 [--temporal runs/rnn.pt] [--device cuda]
    python benchmarks/temporal_speed.py --size 480x270 --frames 240 --device cuda --precision bf16 --batch-size 8

Issue #15's speed target: the temporal model end to end at least half the single-frame model's speed on the
same machine. Rows: the single-frame model (frames batched), the temporal model on one segment (one frame a
call), and on short segments run one after another (batch 1) and side by side (``--lanes``: frame t of each
segment in one call, plus 5 warm-up frames a segment). Without ``--temporal``, the recurrent model is
``from_srresnet`` of the single-frame weights with a non-zero temporal conv (its speed does not depend on
its weights). Every figure comes from this one run; the ratios are what to compare.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import av
import torch

from vsr.device import resolve_device
from vsr.inference import Upscaler
from vsr.models.recurrent import from_srresnet
from vsr.pipeline import Engine
from vsr.segments import plan_segments
from vsr.video import EncodeSettings, VideoReader
from vsr.weights import DEFAULT_WEIGHTS, load


def fps(model: torch.nn.Module, clip: Path, device: torch.device, precision: str, *, batch: int,
        segment: float) -> tuple[float, int]:
    """(end-to-end frames/s, segments) of `vsr upscale`'s engine on ``clip``, the encoder defaults of the device."""
    engine = Engine(Upscaler(model, device=device, precision=precision), batch_size=batch, segment_seconds=segment,
                    settings=EncodeSettings(encoder_bound=device.type == "cuda"))
    with VideoReader(clip) as reader:
        segments = plan_segments(reader.presentation_times() if segment else None, reader.info.fps, segment,
                                 warmup=engine.warmup_frames)
    with tempfile.TemporaryDirectory() as tmp:
        result = engine.upscale_video(clip, Path(tmp) / f"out{clip.suffix}")
    return result.fps, len(segments)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clip", type=Path, default=Path("samples/calendar.mp4"))
    ap.add_argument("--size", default=None, help="WxH: a synthetic clip of --frames at 24 fps instead of --clip")
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS, help="the single-frame model")
    ap.add_argument("--temporal", default=None, help="a temporal model's weights (default: made from --weights)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch-size", type=int, default=4, help="single-frame batch, and the lanes of the last row")
    ap.add_argument("--segment", type=float, default=1.0, help="seconds per segment of the segmented rows")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.size:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from clips import make_clip

            w, h = (int(v) for v in args.size.split("x"))
            args.clip = make_clip(Path(tmp) / "in.mp4", frames=args.frames, width=w, height=h, fps=24, audio="aac")
        measure(args)


def measure(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    single = load(args.weights).model
    if args.temporal:
        temporal = load(args.temporal).model
    else:
        temporal = from_srresnet(single)
        torch.manual_seed(0)
        with torch.no_grad():
            temporal.temporal.weight.normal_(0, 0.01)
    with av.open(str(args.clip)) as c:
        s = c.streams.video[0]
        size, frames = f"{s.codec_context.width}x{s.codec_context.height}", s.frames
    print(f"clip {args.clip} ({frames} frames, {size}); device {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}); "
          f"{args.precision}; torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"temporal model {args.temporal or 'from_srresnet(' + args.weights + ')'}")
    rows = [("single-frame, one segment", single, args.batch_size, 0.0),
            ("temporal, one segment", temporal, 1, 0.0),
            (f"temporal, {args.segment:g} s segments one after another", temporal, 1, args.segment),
            (f"temporal, {args.segment:g} s segments, {args.batch_size} side by side", temporal, args.batch_size,
             args.segment)]
    print("| run | segments | batch | end to end (fps) | against single-frame |")
    print("|---|---|---|---|---|")
    base = None
    for name, model, batch, segment in rows:
        f, n = fps(model, args.clip, device, args.precision, batch=batch, segment=segment)
        base = base or f
        print(f"| {name} | {n} | {batch} | {f:.2f} | {f / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()

"""Build samples/calendar.mp4: the 41 Vid4 'calendar' BIx4 frames (180x144) at 10 fps, H.264, with a
generated stereo AAC soundtrack, so that the README's first `vsr upscale` works out of the box.

    python samples/make_sample.py --frames ../shared/datasets/vid4/BIx4/calendar -o samples/calendar.mp4
"""
from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def soundtrack(seconds: float, rate: int = 48000) -> np.ndarray:
    """A soft two-note chime per second (stereo float32), so a player shows the audio is there."""
    t = np.arange(int(seconds * rate)) / rate
    env = np.exp(-3.0 * (t % 1.0))
    notes = np.where((t // 1.0) % 2 == 0, 523.25, 659.25)
    left = 0.25 * env * np.sin(2 * np.pi * notes * t)
    right = 0.25 * env * np.sin(2 * np.pi * notes * 1.5 * t)
    return np.stack([left, right]).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=Path, default=Path("../shared/datasets/vid4/BIx4/calendar"))
    ap.add_argument("-o", "--output", type=Path, default=Path("samples/calendar.mp4"))
    ap.add_argument("--fps", type=int, default=10)
    args = ap.parse_args()
    files = sorted(args.frames.glob("*.png"))
    if not files:
        raise SystemExit(f"{args.frames}: no PNG frames")
    first = cv2.imread(str(files[0]))
    h, w = first.shape[:2]
    with av.open(str(args.output), "w", options={"movflags": "+faststart"}) as out:
        vs = out.add_stream("libx264", rate=args.fps, options={"crf": "16", "preset": "slow"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.colorspace = 5  # BT.601 (SMPTE170M/BT470BG): SD material
        vs.codec_context.color_range = 1  # limited (MPEG) range
        aus = out.add_stream("aac", rate=48000, options={"b": "96k"})
        aus.layout = "stereo"
        for i, f in enumerate(files):
            rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="itu601", dst_color_range="MPEG")
            vf.pts = i
            vf.time_base = Fraction(1, args.fps)
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
        audio = soundtrack(len(files) / args.fps)
        for start in range(0, audio.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, start:start + 1024]), format="fltp",
                                            layout="stereo")
            af.sample_rate, af.pts, af.time_base = 48000, start, Fraction(1, 48000)
            out.mux(aus.encode(af))
        out.mux(aus.encode(None))
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, {len(files)} frames {w}x{h} @ {args.fps} fps)")


if __name__ == "__main__":
    main()

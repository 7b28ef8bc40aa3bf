"""Make a training set of real clips for `vsr train --clips` from folders of frames and video files.

Each clip becomes a folder of PNG frames (00000.png, ...), consecutive frames only, reduced by a whole
factor (box filter) until its height is at most --max-height, so footage of any size moves and looks like
Vid4-scale video (a 1080p pan becomes 540p); video files give their first --max-frames frames. Folders
named with --hold-out are written under OUT_VAL instead (validation clips never trained on).

    python scripts/prepare_clips.py data/clips data/train-clips --val-out data/val-clips \
        --hold-out judo --hold-out 00002_0004 --skip demo-frames --skip bigbuckbunny
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import av
from PIL import Image

IMAGE = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v"}


def natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def frames_of(src: Path, max_frames: int):
    if src.is_dir():
        files = sorted((p for p in src.iterdir() if p.suffix.lower() in IMAGE), key=natural)
        for p in files[:max_frames]:
            yield Image.open(p).convert("RGB")
        return
    with av.open(str(src)) as box:
        for i, frame in enumerate(box.decode(video=0)):
            if i == max_frames:
                break
            yield frame.to_image()


def reduced(img: Image.Image, max_height: int) -> Image.Image:
    factor = 1
    while img.height / factor > max_height:
        factor += 1
    img = img.reduce(factor) if factor > 1 else img
    return img.crop((0, 0, img.width - img.width % 4, img.height - img.height % 4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--val-out", type=Path)
    ap.add_argument("--hold-out", action="append", default=[], help="clip name (folder or file stem) to validate on")
    ap.add_argument("--skip", action="append", default=[], help="clip name to leave out")
    ap.add_argument("--max-height", type=int, default=576)
    ap.add_argument("--max-frames", type=int, default=150)
    args = ap.parse_args()
    sources = sorted({p.parent for p in args.src.rglob("*") if p.suffix.lower() in IMAGE}
                     | {p for p in args.src.rglob("*") if p.suffix.lower() in VIDEO})
    for src in sources:
        name = src.stem if src.is_file() else src.name
        if name in args.skip:
            continue
        dest = (args.val_out if name in args.hold_out else args.out) / f"{src.parent.name}_{name}"
        dest.mkdir(parents=True, exist_ok=True)
        n = 0
        for n, img in enumerate(frames_of(src, args.max_frames), 1):
            reduced(img, args.max_height).save(dest / f"{n - 1:05d}.png", compress_level=1)
        print(f"{dest}: {n} frames")


if __name__ == "__main__":
    main()

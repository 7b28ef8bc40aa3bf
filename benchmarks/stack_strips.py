"""Stack comparison strips from `vsr bench --report` folders into one grid image (for the model card).

    python benchmarks/stack_strips.py REPORT/compare_baboon.png REPORT/compare_comic.png -o grid.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("strips", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    images = []
    for path in args.strips:
        img = cv2.imread(str(path))
        if img is None:
            raise SystemExit(f"{path}: not an image")
        images.append(img)
    width = max(i.shape[1] for i in images)
    rows = []
    for img in images:
        pad = np.full((img.shape[0], width - img.shape[1], 3), 255, np.uint8)
        rows += [np.hstack([img, pad]), np.full((6, width, 3), 255, np.uint8)]
    cv2.imwrite(str(args.output), np.vstack(rows[:-1]))
    print(f"{args.output}: {len(images)} strips, {width} px wide")


if __name__ == "__main__":
    main()

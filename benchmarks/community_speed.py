"""Model speed of community architectures (through spandrel) beside srresnet-mse, in one run on one machine.

    python benchmarks/community_speed.py --size 180x144 --seconds 10

The community models are random-init files with the shapes of well-known releases (nothing is
downloaded): Compact 64 features x 32 convs x4 (Real-ESRGAN's realesr-general-x4v3) and ESRGAN 64 x 23
blocks x4 (RealESRGAN_x4plus). Each is saved to a temporary .pth, loaded by ``vsr.weights.load`` as
``vsr upscale --weights FILE`` would, and timed through the same ``Upscaler``; the rounds alternate
between the models so a noisy machine affects them alike. Speed does not depend on the weights' values.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vsr.device import resolve_device, resolve_precision
from vsr.inference import Upscaler
from vsr.weights import load


def _community_files(folder: Path) -> dict[str, Path]:
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    files = {}
    for name, model in (("Compact 64x32 x4 (realesr-general-x4v3 shape)", Compact(num_feat=64, num_conv=32, upscale=4)),
                        ("ESRGAN 64x23 x4 (RealESRGAN_x4plus shape)", ESRGAN(num_filters=64, num_blocks=23, scale=4))):
        path = folder / f"{name.split()[0].lower()}.pth"
        torch.save(model.state_dict(), path)
        files[name] = path
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="180x144")
    ap.add_argument("--seconds", type=float, default=10.0, help="timing per model and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    device = resolve_device(args.device)
    frames = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="vsr-community-") as tmp:
        sources = {"srresnet-mse (shipped)": "srresnet-mse"} | {k: str(v) for k, v in _community_files(Path(tmp)).items()}
        ups, precisions = {}, {}
        for name, src in sources.items():
            loaded = load(src)
            p = resolve_precision(device, args.precision)
            p = p if p in loaded.descriptor.precisions else "fp32"
            ups[name] = Upscaler(loaded.model, device=device, precision=p, descriptor=loaded.descriptor)
            precisions[name] = (p, loaded.descriptor.num_parameters)
        counts = {k: 0 for k in ups}
        spent = {k: 0.0 for k in ups}
        for _ in range(args.rounds):
            for name, up in ups.items():
                up.upscale(frames)  # warm-up
                start = time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    up.upscale(frames)
                    counts[name] += 1
                spent[name] += time.perf_counter() - start
    base = counts["srresnet-mse (shipped)"] / spent["srresnet-mse (shipped)"]
    print(f"device {device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {w}x{h} frames, batch 1, {args.rounds} alternating rounds of {args.seconds:g} s")
    print("| model | parameters | precision | frames/s | vs srresnet-mse |")
    print("|---|---|---|---|---|")
    for name in ups:
        fps = counts[name] / spent[name]
        print(f"| {name} | {precisions[name][1]:,} | {precisions[name][0]} | {fps:.2f} | {fps / base:.2f}x |")


if __name__ == "__main__":
    main()

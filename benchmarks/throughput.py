"""Stage-by-stage throughput of `vsr upscale`: model only, decode only, encode only, end to end.

    python benchmarks/throughput.py --sizes 180x144 480x270 960x540 --precisions fp32 bf16

For each input size it builds a real clip from the Vid4 ground-truth frames (resized, with a
generated stereo AAC track), then measures in one run:
  1. model only: frames/s of the generator on device tensors per precision (the fused inference graph
     `vsr upscale` runs, plus the original graph at the end-to-end precision), with the TFLOP/s that
     achieves (FLOPs counted from the original model with torch's FlopCounterMode), its share of a
     measured dense GEMM of the same precision on this device, and of --peak-tflops (the data-sheet
     dense bf16 peak; known GPUs are filled in);
  2. decode only (to RGB) and encode only (at the 4x output size, default codec settings) of the
     model's own output pictures, computed beforehand in the form the pipeline hands the encoder
     (YUV 4:2:0 planes made on a GPU, RGB for swscale on a CPU): x264's speed depends on the
     content, and sharper SR pictures encode slower than bicubic ones (also measured, in their own
     column, as RGB);
  3. end to end `Engine.upscale_video` on the clip (audio copied).
Pipeline efficiency = end-to-end fps / min(model, decode, encode). Device, precision, batch, tile,
threads, torch and PyAV versions are printed beside the table. ``--presets`` adds encode-only
figures for other x264 presets at the largest size (the speed/size trade-off of the encoder), from
RGB pictures and from YUV 4:2:0 planes (what a GPU hands the encoder).
"""
from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from vsr.colour import Yuv420, rgb_to_yuv420p
from vsr.device import resolve_device, resolve_precision
from vsr.inference import Upscaler
from vsr.pipeline import Engine
from vsr.video import (ContainerCaps, EncodeSettings, Frame, OutputPlan, VideoReader, VideoWriter, encoder_defaults,
                       plan_output)
from vsr.weights import DEFAULT_WEIGHTS, load

VID4_GT = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "vid4" / "GT" / "foliage"
PEAK_TFLOPS_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "RTX 4090": 165.0}


def make_clip(path: Path, size: tuple[int, int], frames: int, source: Path, fps: int = 25) -> Path:
    """An H.264 + AAC clip of ``frames`` real frames resized to ``size`` (w, h)."""
    files = sorted(source.glob("*.png"))
    if not files:
        raise SystemExit(f"{source}: no PNG frames (pass --frames-dir)")
    w, h = size
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "fast"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = out.add_stream("aac", rate=48000)
        aus.layout = "stereo"
        for i in range(frames):
            img = cv2.cvtColor(cv2.imread(str(files[i % len(files)])), cv2.COLOR_BGR2RGB)
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if w < img.shape[1] else cv2.INTER_CUBIC)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
        n = int(48000 * frames / fps)
        tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32)
        for start in range(0, n, 1024):
            chunk = np.ascontiguousarray(np.stack([tone[start : start + 1024]] * 2))
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = 48000, start, Fraction(1, 48000)
            out.mux(aus.encode(af))
        out.mux(aus.encode(None))
    return path


def flops_per_frame(model: torch.nn.Module, h: int, w: int) -> float:
    model = copy.deepcopy(model).cpu()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, h, w))
    return float(counter.get_total_flops())


def gemm_tflops(device: torch.device, precision: str, seconds: float = 2.0) -> float:
    """Achieved TFLOP/s of a large dense matrix product: what this device really sustains."""
    n = 8192 if device.type == "cuda" else 2048
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
        sync(device)
    return 2 * n**3 * done / (time.perf_counter() - start) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_fps(up: Upscaler, h: int, w: int, batch: int, seconds: float) -> float:
    x = torch.rand(batch, 3, h, w, device=up.device)
    up.run(x)
    sync(up.device)
    done, start = 0, time.perf_counter()
    while True:
        up.run(x)
        done += batch
        sync(up.device)
        if time.perf_counter() - start >= seconds:
            return done / (time.perf_counter() - start)


def decode_fps(clip: Path) -> tuple[float, list[Frame]]:
    start = time.perf_counter()
    with VideoReader(clip) as reader:
        frames = [f for f in reader if isinstance(f, Frame)]
    return len(frames) / (time.perf_counter() - start), frames


def upscaled(frames: list[Frame], images: list[np.ndarray], pix_fmt: str | None = None) -> list[Frame]:
    """``frames`` with their pictures replaced by ``images`` (timing and colour kept)."""
    return [replace(f, image=img, pix_fmt=pix_fmt or f.pix_fmt) for f, img in zip(frames, images)]


def plan_for(clip: Path, settings: EncodeSettings | None = None, scale: int = 4) -> OutputPlan:
    """The output plan of upscaling ``clip`` ``scale``-x into an .mp4, video only."""
    with VideoReader(clip) as reader:
        plan = plan_output(reader.info, ContainerCaps.for_path(clip), scale=scale, settings=settings or EncodeSettings())
    return replace(plan, streams=())


def as_planes(clip: Path, frames: list[Frame], device: torch.device) -> list[Frame]:
    """RGB frames as the YUV 4:2:0 planes a GPU hands the encoder (``vsr.colour``, run on ``device``)."""
    target = plan_for(clip).yuv420 or Yuv420.for_tags(2, 0)
    out = []
    for f in frames:
        x = torch.from_numpy(f.image).to(device).permute(2, 0, 1)[None].float() / 255
        out.append(replace(f, image=rgb_to_yuv420p(x, target)[0].cpu().numpy(), pix_fmt="yuv420p"))
    return out


def encode_fps(clip: Path, big: list[Frame], scale: int, tmp: Path,
               settings: EncodeSettings | None = None) -> tuple[float, int]:
    """Frames/s and output bytes of encoding the already ``scale``-x pictures ``big`` with ``settings``."""
    plan = plan_for(clip, settings, scale)
    start = time.perf_counter()
    with VideoWriter(tmp / "enc.mp4", plan, {}) as writer:
        for f in big:
            writer.write_frame(f)
        writer.finish()
    return len(big) / (time.perf_counter() - start), (tmp / "enc.mp4").stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["180x144", "480x270", "960x540"])
    ap.add_argument("--frames", type=int, nargs="+", default=[41, 12, 6], help="clip length per size")
    ap.add_argument("--precisions", nargs="+", default=None, help="default: fp32 bf16 (+ fp16 on GPUs)")
    ap.add_argument("--e2e-precision", default="auto")
    ap.add_argument("--batch-size", type=int, default=0, help="frames per batch; 0 = automatic, as vsr upscale")
    ap.add_argument("--tile", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS)
    ap.add_argument("--model-seconds", type=float, default=4.0)
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device")
    ap.add_argument("--frames-dir", type=Path, default=VID4_GT)
    ap.add_argument("--presets", nargs="*", default=[], help="x264 presets to compare at the largest size")
    ap.add_argument("--compile", default=None, metavar="MODE",
                    help="also time the fused model under torch.compile(mode=MODE), e.g. default, max-autotune, "
                         "reduce-overhead (CUDA graphs); an extra model-only column")
    args = ap.parse_args()

    device = resolve_device(args.device)
    precisions = args.precisions or (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS_BF16.items() if k in name), None)
    e2e_precision = resolve_precision(device, args.e2e_precision)
    if e2e_precision not in precisions:  # the end-to-end run needs its own model column (auto = fp32 without fast bf16)
        precisions.append(e2e_precision)
    encoding = EncodeSettings(encoder_bound=device.type == "cuda")  # the defaults of `vsr upscale` on this device
    preset = encoder_defaults("libx264", encoder_bound=encoding.encoder_bound)[2]
    gemm = {p: gemm_tflops(device, p) for p in precisions}
    print(f"device {device} ({name}); torch {torch.__version__}, PyAV {av.__version__}, torch threads "
          f"{torch.get_num_threads()}, batch {args.batch_size or 'auto (per size, in the first column)'}, tile {args.tile or 'off'}, encoder default "
          f"(libx264 crf 18 preset {preset}, threads auto), end-to-end precision {e2e_precision}; measured dense GEMM "
          + ", ".join(f"{p} {v:.3f}" for p, v in gemm.items()) + " TFLOP/s; data-sheet peak "
          f"{f'{peak:g} TFLOP/s' if peak else 'unknown (pass --peak-tflops)'}")
    columns = precisions + ([f"{e2e_precision} compiled ({args.compile})"] if args.compile else [])
    header = ("| input | model " + " | model ".join(columns) + f" (fps) | model {e2e_precision}, original graph (fps) "
              "| TFLOP/s (best) | share of GEMM | decode (fps) | encode 4x (fps) | encode 4x, bicubic pictures (fps) "
              "| end to end (fps) | efficiency "
              "| bottleneck |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    model = load(args.weights).model
    largest: tuple[Path, list[Frame]] | None = None
    with tempfile.TemporaryDirectory(prefix="vsr-throughput-") as tmp_dir:
        tmp_root = Path(tmp_dir)
        for size, n in zip(args.sizes, args.frames):
            w, h = map(int, size.split("x"))
            flops = flops_per_frame(model, h, w)
            ups = {p: Upscaler(model, device=device, precision=p, tile=args.tile) for p in precisions}
            batch = args.batch_size or ups[e2e_precision].auto_batch(h, w)
            m = {p: model_fps(up, h, w, batch, args.model_seconds) for p, up in ups.items()}
            unfused = model_fps(Upscaler(model, device=device, precision=e2e_precision, tile=args.tile, fuse=False), h, w,
                                batch, args.model_seconds)
            if args.compile:
                compiled = Upscaler(model, device=device, precision=e2e_precision, tile=args.tile)
                compiled.model = torch.compile(compiled.model, mode=args.compile, dynamic=False)
                m[f"{e2e_precision} compiled"] = model_fps(compiled, h, w, batch, args.model_seconds)
            tmp = tmp_root / size
            tmp.mkdir()
            clip = make_clip(tmp / "clip.mp4", (w, h), n, args.frames_dir)
            d_fps, frames = decode_fps(clip)
            up = Upscaler(model, device=device, precision=e2e_precision, tile=args.tile)
            # the model's own 4x pictures, batched and converted as end to end (YUV 4:2:0 made on a GPU, RGB
            # for swscale on a CPU): what the encoder really gets. The clips are yuv420p H.264.
            engine = Engine(up, batch_size=batch)
            target = engine.output_target(plan_for(clip, encoding))
            sr = upscaled(frames, list(engine.upscale_frames((f.image for f in frames), yuv=target)),
                          "yuv420p" if target else None)
            e_fps, _ = encode_fps(clip, sr, 4, tmp, encoding)
            bicubic = upscaled(frames, [cv2.resize(f.image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC) for f in frames])
            e_bicubic, _ = encode_fps(clip, bicubic, 4, tmp, encoding)
            del bicubic
            result = Engine(up, batch_size=batch, settings=encoding).upscale_video(clip, tmp / "out.mp4")
            if args.presets and size == args.sizes[-1]:
                largest = (clip, sr if target is None else upscaled(frames, list(engine.upscale_frames(f.image for f in frames))))
            stages = {"model": m[e2e_precision], "decode": d_fps, "encode": e_fps}
            slowest = min(stages, key=stages.get)
            best = max(m, key=m.get)
            tflops = m[best] * flops / 1e12
            share = f" ({100 * tflops / peak:.1f}% of data-sheet peak)" if peak else ""
            print(f"| {w}x{h} ({flops / (w * h) / 1e6:.2f} MFLOP/px, batch {batch}) | " + " | ".join(f"{v:.2f}" for v in m.values())
                  + f" | {unfused:.2f} | {tflops:.3f} ({best}){share} | {100 * tflops / gemm[best.split()[0]]:.0f}% | {d_fps:.1f} | "
                  f"{e_fps:.1f} | {e_bicubic:.1f} | {result.fps:.2f} | {result.fps / stages[slowest]:.2f} | {slowest} |")
        if args.presets and largest:
            clip, frames = largest
            planes = as_planes(clip, frames, device)
            print(f"\nEncoder presets at {args.sizes[-1]} -> 4x ({len(frames)} model-output frames, libx264 crf 18, "
                  "encode only; from RGB = swscale converts in the encoder thread, as on a CPU; from YUV planes = "
                  "converted beforehand, as on a GPU)\n")
            print("| preset | encode from RGB (fps) | encode from YUV planes (fps) | MB per frame |\n|---|---|---|---|")
            for name in args.presets:
                fps = {}
                for form, pics in (("rgb", frames), ("yuv", planes)):
                    tmp = tmp_root / f"preset-{name}-{form}"
                    tmp.mkdir()
                    fps[form], size_bytes = encode_fps(clip, pics, 4, tmp, EncodeSettings(preset=name))
                print(f"| {name} | {fps['rgb']:.2f} | {fps['yuv']:.2f} | {size_bytes / len(frames) / 1e6:.2f} |")


if __name__ == "__main__":
    main()

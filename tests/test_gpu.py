"""CUDA paths: the same answers as the CPU, the streaming engine, and the throughput benchmark on the GPU.

Every test here is marked ``gpu`` and skips cleanly on machines without CUDA (CI, the dev box).
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from clips import make_clip, probe, swscale_yuv420p
from conftest import tiny_model

from vsr.colour import Yuv420
from vsr.inference import Upscaler
from vsr.pipeline import Engine

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("precision,tolerance", [("fp32", 1), ("bf16", 12), ("fp16", 4)])
def test_cuda_matches_cpu(precision, tolerance):
    frames = np.random.default_rng(0).integers(0, 256, (3, 23, 17, 3), dtype=np.uint8)
    ref = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32").upscale(frames).astype(int)
    got = Upscaler(tiny_model(), device=torch.device("cuda"), precision=precision).upscale(frames).astype(int)
    assert np.abs(got - ref).max() <= tolerance


def test_yuv_planes_made_on_cuda_match_swscale_of_the_cpu_output():
    frames = np.random.default_rng(1).integers(0, 256, (2, 20, 16, 3), dtype=np.uint8)
    rgb = Upscaler(tiny_model(), device=torch.device("cpu"), precision="fp32").upscale(frames)
    planes = Upscaler(tiny_model(), device=torch.device("cuda"), precision="fp32").upscale(frames, yuv=Yuv420.for_tags(1, 1))
    for got, pic in zip(planes, rgb):
        assert np.abs(got.astype(int) - swscale_yuv420p(pic, 1, 1).astype(int)).max() <= 3


def test_engine_on_cuda_keeps_every_frame(tmp_path: Path):
    src = make_clip(tmp_path / "in.mp4", frames=10, width=40, height=24)
    engine = Engine(Upscaler(tiny_model(), device=torch.device("cuda"), precision="bf16"), batch_size=4)
    assert engine.device_colour  # the encoder gets YUV 4:2:0 planes made on the GPU
    result = engine.upscale_video(src, tmp_path / "out.mp4")
    assert result.frames_in == result.frames_out == probe(tmp_path / "out.mp4")["frames"] == 10


@pytest.mark.slow
def test_throughput_benchmark_on_cuda(shared: Path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cuda", "--sizes", "180x144",
         "--frames", "16", "--model-seconds", "1", "--frames-dir", str(shared / "vid4" / "GT" / "foliage")],
        capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    row = next(line for line in out.stdout.splitlines() if line.startswith("| 180x144"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[-2]) > 0 and cells[-1] in ("model", "decode", "encode")

"""The stage-by-stage throughput benchmark on the CPU (its CUDA twin is in test_gpu.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.slow
def test_throughput_benchmark_on_cpu_with_presets(shared: Path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cpu", "--sizes", "64x48",
         "--frames", "4", "--model-seconds", "0.3", "--precisions", "bf16", "--presets", "ultrafast",
         "--frames-dir", str(shared / "vid4" / "GT" / "foliage")],
        capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    row = _cells(next(line for line in lines if line.startswith("| 64x48")))
    assert float(row[-3]) > 0 and 0 < float(row[-2]) and row[-1] in ("model", "decode", "encode")
    preset = _cells(next(line for line in lines if line.startswith("| ultrafast")))
    assert len(preset) == 4 and all(float(v) > 0 for v in preset[1:])  # from RGB, from YUV planes, MB per frame

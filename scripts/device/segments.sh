#!/bin/bash
# Lent GPU: parallel segment encoders (#16). End to end 960x540 -> 4K and 480x270 -> 1080p with
# --jobs 1 (one x264, as before) against several segment workers on the one GPU, same preset, plus
# model-only (benchmarks/parallel_speed.py). Then the GPU tests of resume and --jobs.
# Carry: data/whl (the PyAV wheel, absent from the GPU image). Not yet run on a GPU (written 2026-12-01).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/vsr-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site data/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD  # the workers (python -m vsr) inherit it
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
timeout 240 python3 benchmarks/parallel_speed.py --size 960x540 --frames ${FRAMES_4K:-240} --jobs ${JOBS_4K:-1 4 8} \
  --segment 2 --preset ${PRESET:-medium} 2>&1 | tee "$OUT/parallel_960x540.md"
timeout 150 python3 benchmarks/parallel_speed.py --size 480x270 --frames ${FRAMES_1080:-480} --jobs ${JOBS_1080:-1 4} \
  --segment 2 --preset ${PRESET:-medium} 2>&1 | tee "$OUT/parallel_480x270.md"
timeout 120 python3 -m pytest -p no:cacheprovider -q tests/test_segments.py tests/test_parallel.py 2>&1 | tail -n 5 \
  | tee "$OUT/segment_tests.log"
# #15: a temporal model's segments side by side (one model call for frame t of each) against one after another
timeout 150 python3 benchmarks/temporal_speed.py --size 480x270 --frames 240 --device cuda --precision bf16 \
  --batch-size 8 --segment 1 2>&1 | tee "$OUT/temporal_480x270.md"

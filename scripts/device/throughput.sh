#!/bin/bash
# Lent GPU, call 1: GPU tests and the stage-by-stage throughput benchmark.
# Carry: data/whl (the PyAV wheel, absent from the GPU image) and data/foliage (Vid4 GT frames).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/vsr-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site data/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
python3 -c "import torch, av, cv2; print('torch', torch.__version__, 'av', av.__version__, 'cv2', cv2.__version__, torch.cuda.get_device_name(), 'cpus', __import__('os').cpu_count())"
# tests/conftest.py looks for ../shared/datasets beside the repo
mkdir -p ../shared/datasets/vid4/GT && ln -sfn "$PWD/data/foliage" ../shared/datasets/vid4/GT/foliage
timeout 180 python3 -m pytest -p no:cacheprovider -q -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -n 8
timeout 60 python3 -m vsr upscale samples/calendar.mp4 -o /tmp/calendar_x4.mp4 --overwrite 2>&1 | tail -n 3
timeout 300 python3 benchmarks/throughput.py --device ${DEVICE:-cuda} --frames ${FRAMES:-400 200 60} --model-seconds ${MODEL_SECONDS:-2} \
  --frames-dir data/foliage --presets ${PRESETS:-ultrafast veryfast medium} ${EXTRA:-} 2>&1 | tee "$OUT/throughput.md"

#!/bin/bash
# Lent GPU, after throughput.sh (which installs PyAV to /tmp/site: the codec degradation needs it; chain the
# calls at once, a warm machine keeps /tmp for about 30 s): #14's compression-aware SRResNet from the shipped
# srresnet-real on the `real` degradation with the codec on larger pictures, in a fixed time budget, the
# degradation in --degrade-workers threads on the machine's cores (the calibration run measures whether they
# keep up: its steps/s is printed). Carry: data/train (BSDS500 + Sun-Hays 80) and data/val6 (6 BSD100 images).
# Bench the returned weights on this side (Vid4 does not fit in a call): vsr bench vid4 --weights FILE
# --degradation bi --degradation h264:crf=23 --degradation h264:crf=28 --degradation h265:crf=30 --degradation jpeg:q=40
# Written 2026-12-02, not yet run on a GPU.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site
OUT=${OUT:-/tmp/vsr-out}; mkdir -p "$OUT"
python3 -c "import av" 2>/dev/null || { echo "PyAV is missing: run throughput.sh first, on the same warm machine"; exit 3; }
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
timeout 60 python3 benchmarks/degrade_speed.py --degradation "${DEG:-real:context=2}" --batch-size ${BATCH:-32} \
  --crop ${CROP:-96} --seconds 3 --device ${DEVICE:-cuda} --workers 1 ${WORKERS:-8} 2>&1 | tail -n 9 | tee "$OUT/degrade_speed_gpu.md"
python3 scripts/device/train.py --phase mse --budget ${BUDGET:-420} --data data/train --val data/val6 \
  --init ${INIT:-weights/srresnet-real.pt} --degradation "${DEG:-real:context=2}" --val-degradation h264:crf=28 \
  --degrade-workers ${WORKERS:-8} --out runs/gpu-real --export runs/gpu-real-final.pt --batch-size ${BATCH:-32} \
  --crop ${CROP:-96} --lr ${LR:-1e-4} --lr-min 1e-6 --calibrate ${CAL:-100} --device ${DEVICE:-cuda} ${EXTRA:-} \
  2>&1 | grep -v Warning | tail -n 20
cp runs/gpu-real-final.pt "$OUT/srresnet-real-gpu.pt"
for f in log.csv final.json curves.png grid.png; do cp runs/gpu-real/$f "$OUT/real_$f"; done
tail -n 3 runs/gpu-real/log.csv

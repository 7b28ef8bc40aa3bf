#!/bin/bash
# Lent GPU, call 2: SRResNet-MSE from the shipped CPU model, in a fixed time budget.
# Carry: data/train (BSDS500 train+test, Sun-Hays 80) and data/val (BSD100).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site  # /tmp/site: PyAV from call 1, if this machine ran it
OUT=${OUT:-/tmp/vsr-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
python3 scripts/device/train.py --phase mse --budget ${BUDGET:-330} --data data/train --val data/val --init srresnet-mse \
  --out runs/gpu-mse --export runs/gpu-mse-final.pt --batch-size ${BATCH:-64} --crop ${CROP:-128} --lr 2e-4 --lr-min 1e-6 \
  --device ${DEVICE:-cuda} ${EXTRA:-} 2>&1 | grep -v Warning | tail -n 20
cp runs/gpu-mse-final.pt "$OUT/srresnet-mse-gpu.pt"
for f in log.csv final.json curves.png grid.png; do cp runs/gpu-mse/$f "$OUT/mse_$f"; done
grep -o '"val_psnr"[^,]*' runs/gpu-mse/final.json; tail -n 3 runs/gpu-mse/log.csv

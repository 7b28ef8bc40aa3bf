#!/bin/bash
# Lent GPU, call 3: Per-Pix GAN from the MSE model of call 2, in a fixed time budget.
# Carry: data/vgg (the VGG19 weights); data/train and data/val stay on the machine from call 2.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site  # /tmp/site: PyAV from call 1, if this machine ran it
OUT=${OUT:-/tmp/vsr-out}; mkdir -p "$OUT"
INIT=runs/gpu-mse-final.pt; [ -f $INIT ] || INIT=data/init/srresnet-mse-gpu.pt; [ -f $INIT ] || INIT=srresnet-mse
ls data; echo "init: $INIT"
python3 scripts/device/train.py --phase perpix --budget ${BUDGET:-120} --data data/train --val data/val --init $INIT \
  --vgg-weights data/vgg/vgg19_features_conv54_fp16.pt --out runs/gpu-perpix --export runs/gpu-perpix-final.pt \
  --batch-size ${BATCH:-32} --crop 96 --lr 1e-4 --lr-min 1e-5 --calibrate ${CAL:-60} --device ${DEVICE:-cuda} ${EXTRA:-} \
  2>&1 | grep -v Warning | tail -n 20
cp runs/gpu-perpix-final.pt "$OUT/srgan-perpix-gpu.pt"
for f in log.csv final.json curves.png grid.png; do cp runs/gpu-perpix/$f "$OUT/perpix_$f"; done
# the kept generators, fp16, five to a tar (each file that comes back is at most 16 MiB)
python3 - <<'PY'
import os, tarfile
from pathlib import Path
import torch
snaps = sorted(Path("runs/gpu-perpix/snapshots").glob("step*.pt"))
out = Path(os.environ.get("OUT", "/tmp/vsr-out"))
for i in range(0, len(snaps), 5):
    with tarfile.open(out / f"perpix_snapshots_{i // 5}.tar", "w") as tar:
        for p in snaps[i : i + 5]:
            ck = torch.load(p, map_location="cpu", weights_only=True)
            half = Path("/tmp") / p.name
            torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in ck["model"].items()},
                        "step": ck["step"], "config": ck["config"]}, half)
            tar.add(half, arcname=p.name)
print("snapshots:", [p.name for p in snaps])
PY
tail -n 3 runs/gpu-perpix/log.csv

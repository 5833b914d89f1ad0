#!/usr/bin/env bash
# Issue 27's GPU figures in one device call of at most 10 minutes (nothing here has run on a GPU yet).
# The GPU machine has torch, timm, accelerate, einops, tensorboard but no pytorch3d and no network. Here, once:
#   bash ../shared/tools/gpu-wheels.sh        # writes .whl/ (stripped easypytorch3d + iopath), git-ignored
# then one device call, carrying ".whl", with command:
#   bash tools/gpu_check.sh                   # figures in $OUT/gpu_check.json, logs beside it
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "error: could not install .whl/ (run ../shared/tools/gpu-wheels.sh here and carry .whl)"; exit 2; }
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true
out=${OUT:-out}
timeout 560 python3 tools/gpu_check.py --out "$out/gpu_check.json"

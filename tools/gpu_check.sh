#!/usr/bin/env bash
# Performance on a lent accelerator, in one go (about 8 minutes on an H200):
#
#   tools/gpu_check.sh OUT
#
# 1. Installs the project with its GPU extra and PyTorch (CUDA build) into $VENV
#    (default .venv-gpu) unless that environment already imports both.
# 2. The sampler against PyTorch CUDA (tools/bench_sampler.py: each framework in
#    its own process, forward, θ-only gradient, image and θ gradients), with the
#    floor at the HBM bandwidth (BANDWIDTH_GBS, default 4800: an H200's HBM3e).
# 3. Training examples/s and input wait (tools/bench_train.py): the RTS ST-CNN at
#    batch 256 with the distortions on the device, and CUB with 4 transformers at
#    batch 16 (448 px, 224 px crops, synthetic JPEGs, random backbones), each with
#    the XLA sampler on and off.
# Writes OUT/benchmarks.md (both sections), OUT/log.txt and the device's name.
#
# Environment: VENV, EXTRA (pip extras; default gpu,tools; cpu,tools to check the
# script on a CPU), TORCH (pip requirement; default torch==2.13.0, the CUDA build;
# torch==2.13.0+cpu on a CPU), DEVICE (cuda; cpu), WORKLOADS (W1,W2,W3,W4), ROUNDS
# (2), REPEATS (10), TRAIN_CASES (the four accelerator cases), BANDWIDTH_GBS.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:?usage: tools/gpu_check.sh OUT}
VENV=${VENV:-.venv-gpu}
EXTRA=${EXTRA:-gpu,tools}
TORCH=${TORCH:-torch==2.13.0}
DEVICE=${DEVICE:-cuda}
WORKLOADS=${WORKLOADS:-W1,W2,W3,W4}
ROUNDS=${ROUNDS:-2}
REPEATS=${REPEATS:-10}
TRAIN_CASES=${TRAIN_CASES:-rts_st_cnn_device,rts_st_cnn_device_noxla,cub_4_b16,cub_4_b16_noxla}
BANDWIDTH_GBS=${BANDWIDTH_GBS:-4800}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
START=$(date +%s)
echo "gpu_check: out ${OUT}, device ${DEVICE}, $(date -u)"

source tools/lib.sh
ensure_venv "$VENV" "$EXTRA" stn_tf,torch "$TORCH"
PY="$VENV/bin/python"
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
"$PY" -c "import tensorflow as tf, torch; print('TensorFlow', tf.__version__, [d.name for d in tf.config.list_physical_devices()]); print('PyTorch', torch.__version__, 'CUDA', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee "$OUT/device.txt" 2>/dev/null || echo "no nvidia-smi: a CPU check" | tee "$OUT/device.txt"
echo "installed after $(( $(date +%s) - START )) s"

echo "== sampler against PyTorch ($DEVICE)"
"$PY" -m tools.bench_sampler --workloads="$WORKLOADS" --rounds="$ROUNDS" \
  --repeats="$REPEATS" --device="$DEVICE" --torch_python="$PY" \
  --bandwidth_gbs="$BANDWIDTH_GBS" --out="$OUT/benchmarks.md"
echo "sampler done after $(( $(date +%s) - START )) s"

echo "== training steps: $TRAIN_CASES"
"$PY" -m tools.bench_train --cases="$TRAIN_CASES" --repeats=1 --out="$OUT/benchmarks.md"
echo "gpu_check done after $(( $(date +%s) - START )) s: $OUT/benchmarks.md"

#!/usr/bin/env bash
# GPU benchmark of cifs_edu (issue 7): PGD-10 adversarial-training and PGD-20 evaluation throughput
# of vanilla and CIFS ResNet-18 (width 64) at batch 128 and 512, AMP + channels_last, synthetic
# CIFAR-shaped data (no download). About 6 minutes; never more than 8 (time-boxed configurations).
# Run from anywhere:  bash benchmarks/gpu.sh [extra options of benchmarks/gpu.py, e.g. --compile]
# Writes $OUT/gpu_bench.json when OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=INT --kill-after=15 470 "$PY" -u -m benchmarks.gpu "$@"

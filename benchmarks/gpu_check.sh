#!/bin/sh
# One prepared GPU check (issue 5): selfcheck strict/TF32, end-to-end FCN-8s throughput with the
# data pipeline, fast modes vs strict fp32. Figures go to $OUT (else benchmarks/out/).
# Usage: sh benchmarks/gpu_check.sh [--quick] [--budget SECONDS]
cd "$(dirname "$0")/.." || exit 1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"

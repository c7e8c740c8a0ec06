#!/usr/bin/env bash
# Wheels of vprlab's dependencies that a bare CUDA image (PyTorch, torchvision, timm, numpy,
# pandas, scipy, matplotlib, pytest already there) lacks, for Python 3.12 on x86-64 Linux,
# into .whl/ (git-ignored). experiments/gpu_check.sh installs them from there, offline.
#   bash experiments/gpu_wheels.sh [PYTHON_VERSION]     # default 3.12
case "${1:-}" in  # --help: the comment above
  -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
  -*) echo "$(basename "$0"): unknown option '$1'; usage: bash experiments/gpu_wheels.sh [PYTHON_VERSION]" >&2; exit 2 ;;
esac
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
PY=${PY:-python3}
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${platforms[@]}" -d .whl \
    "hydra-core==1.3.*" "omegaconf>=2.3,<2.4" faiss-cpu pytorch-metric-learning
# antlr4-python3-runtime 4.9.3 (what Hydra 1.3 pins) is published as a source archive only: build its pure-Python wheel.
$PY -m pip wheel -q --no-deps "antlr4-python3-runtime==4.9.3" -w .whl
ls -la .whl

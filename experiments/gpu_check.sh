#!/usr/bin/env bash
# The CUDA paths and their speed, in one short run on a GPU machine (at most 8 minutes: each step has its own time limit):
#   bash experiments/gpu_check.sh            # or `make gpu-check`; results in $OUT (default outputs/gpu_check)
# 1. pytest -m gpu: nvjpeg decoding, bf16/fp16 training, the BoQ fast path on CUDA, faiss GPU;
# 2. measure_speed.py on CUDA: fp32/bf16/fp16, channels_last, torch.compile, DINOv2, decoders;
# 3. measure_search.py: 100k x 16384 memory-mapped float16 search (faiss GPU when installed).
# Each step has its own time limit and the script goes on after a failure. It writes three
# files: log.txt (every step's output), results.json (every measurement's numbers by step) and
# summary.txt (each step's exit status).
# On a machine without vprlab's dependencies and no network: run experiments/gpu_wheels.sh
# where pip works, bring the .whl/ folder along, and this script installs from it.
case "${1:-}" in  # --help: the comment above; no arguments
  "") ;;
  -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
  *) echo "$(basename "$0"): takes no arguments (got '$1'); see --help" >&2; exit 2 ;;
esac
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
PY=${PY:-python3}
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: no CUDA device visible to $PY (torch.cuda.is_available() is false); run it on a GPU machine" >&2
    exit 1
fi
mkdir -p "$OUT"
json_dir=$(mktemp -d)
: >"$OUT/log.txt"
: >"$OUT/summary.txt"

if [ -d .whl ]; then  # wheels for what the machine lacks (experiments/gpu_wheels.sh)
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vprlab-site .whl/*.whl \
        && export PYTHONPATH=/tmp/vprlab-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}  # vprlab itself, installed or not
export PYTHONUNBUFFERED=1 VPRLAB_PROGRESS=0 WANDB_MODE=${WANDB_MODE:-offline}

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T))" >>"$OUT/log.txt"
    timeout "$limit" "$@" >>"$OUT/log.txt" 2>&1
    local rc=$?
    echo "$name rc=$rc" | tee -a "$OUT/summary.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"
} >>"$OUT/log.txt" 2>&1
[ -d data/synthetic/gsv ] || $PY -m vprlab synth --root data/synthetic >>"$OUT/log.txt" 2>&1

step pytest_gpu 120 $PY -m pytest -q -m gpu tests -p no:cacheprovider
common=(--device cuda --iters 10 --warmup 3 --num-workers 8)
speed() {  # speed NAME SECONDS ARGS...
    local name=$1 limit=$2
    shift 2
    step "$name" "$limit" $PY experiments/measure_speed.py "${common[@]}" "$@" --out "$json_dir/$name.json"
}
# The published recipes' shapes: ResNet50-BoQ at 320, DINOv2-BoQ trained at 280 and evaluated at 322.
speed resnet50_fp32_aggregator 40 --precision 32 --batch-size 64 --what aggregator
speed resnet50_bf16_cl_320 60 --precision bf16 --channels-last --batch-size 256 --what all
speed resnet50_fp16_cl_320 45 --precision fp16 --channels-last --batch-size 256 --what model
speed resnet50_bf16_compile_320 90 --precision bf16 --channels-last --compile --batch-size 256 --what model
speed dinov2_bf16_280 60 --backbone dinov2 --image-size 280 --precision bf16 --batch-size 128 --what model
speed dinov2_bf16_322 45 --backbone dinov2 --image-size 322 --precision bf16 --batch-size 128 --what model
step search_torch_1m 60 $PY experiments/gpu_search_torch.py --num-db 1000000 --dim 16384 --num-queries 1000 --out "$json_dir/search_torch_1m.json"
step search_100k 45 $PY experiments/measure_search.py --num-db 100000 --dim 16384 --num-queries 1000 --out "$json_dir/search_100k.json"

$PY - "$json_dir" "$OUT/results.json" <<'PY'
import json, sys
from pathlib import Path
results = {p.stem: json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("*.json"))}
Path(sys.argv[2]).write_text(json.dumps(results, indent=1))
PY
rm -rf "$json_dir"
cat "$OUT/summary.txt"

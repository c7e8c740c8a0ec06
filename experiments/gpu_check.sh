#!/usr/bin/env bash
# The CUDA paths and their speed, in one short run on a GPU machine (about 5 minutes on one H100):
#   bash experiments/gpu_check.sh            # results in $OUT (default outputs/gpu_check)
# 1. pytest -m gpu: nvjpeg decoding, bf16/fp16 training, the BoQ fast path on CUDA, faiss GPU;
# 2. benchmark_speed.py on CUDA: fp32/bf16/fp16, channels_last, torch.compile, DINOv2, decoders;
# 3. benchmark_search.py: 100k x 16384 memory-mapped float16 search (faiss GPU when installed).
# Each step has its own time limit and the script goes on after a failure; the summary at the
# end lists every step with its exit status.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
PY=${PY:-python}
mkdir -p "$OUT"
status=()

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name" | tee -a "$OUT/log.txt"
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.txt" | tee -a "$OUT/log.txt"
    status+=("$name rc=$rc")
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
$PY -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())" >>"$OUT/gpu.txt" 2>&1
[ -d data/synthetic/gsv ] || $PY -m vprlab.data.synthetic --root data/synthetic >/dev/null 2>&1

step pytest_gpu 240 $PY -m pytest -q -m gpu tests -p no:cacheprovider
common=(--device cuda --batch-size 64 --iters 10 --warmup 3 --num-workers 4)
step speed_resnet50_fp32 120 $PY experiments/benchmark_speed.py "${common[@]}" --precision 32 --out "$OUT/speed_resnet50_fp32.json"
step speed_resnet50_bf16 120 $PY experiments/benchmark_speed.py "${common[@]}" --precision bf16 --what aggregator --out "$OUT/speed_resnet50_bf16.json"
step speed_resnet50_bf16_cl 120 $PY experiments/benchmark_speed.py "${common[@]}" --precision bf16 --channels-last --what model --out "$OUT/speed_resnet50_bf16_cl.json"
step speed_resnet50_fp16_cl 120 $PY experiments/benchmark_speed.py "${common[@]}" --precision fp16 --channels-last --what model --out "$OUT/speed_resnet50_fp16_cl.json"
step speed_resnet50_bf16_compile 240 $PY experiments/benchmark_speed.py "${common[@]}" --precision bf16 --channels-last --compile --what model --out "$OUT/speed_resnet50_bf16_compile.json"
step speed_dinov2_bf16 180 $PY experiments/benchmark_speed.py "${common[@]}" --backbone dinov2 --image-size 322 --precision bf16 --out "$OUT/speed_dinov2_bf16.json"
step search_100k 240 $PY experiments/benchmark_search.py --num-db 100000 --dim 16384 --num-queries 1000

echo "== summary" | tee -a "$OUT/log.txt"
printf '%s\n' "${status[@]}" | tee -a "$OUT/log.txt"

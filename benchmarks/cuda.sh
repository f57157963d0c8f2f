#!/usr/bin/env bash
# The GPU measurements of the README's benchmark table: this script produced them, on one GPU,
# bf16 autocast. Run it from anywhere in a checkout, on a machine with one CUDA GPU and the
# project's Python packages (vitlab itself is read from src/, no install needed):
#
#     bash benchmarks/cuda.sh                     # prints everything
#     OUT=some/folder bash benchmarks/cuda.sh     # and appends every line to some/folder/bench.log
#     PEAK_TFLOPS=989.4 bash benchmarks/cuda.sh   # MFU against this peak (dense, at bf16)
#
# It takes about 5 minutes on one H100 (most of it compiling ViT-B for the --compile row). MFU
# divides by Lightning's peak FLOP/s for the GPU (get_available_flops), or by PEAK_TFLOPS; for an
# "NVIDIA H200" (SXM), which Lightning's table does not name, it uses NVIDIA's dense bf16 figure,
# 989.4 TFLOP/s (1,979 with sparsity), as Lightning does for the H100 SXM. PYTHON picks the
# interpreter (default python3).
set -euo pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-python3}"

# one GPU: the first, unless the caller chose
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
# 3 warm-up steps of each model alone (compilation, peak memory), then 7 alternating rounds of 5
# timed steps: 38 steps a model, about 13 s for ViT-L training at 0.35 s a step
VIT=(benchmarks/vit_vs_timm.py --device cuda --dtype bfloat16 --batch-size 128
    --steps 5 --rounds 7 --warmup 3)

gpu_name() {
    nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1
}

peak_args() {
    if [[ -n "${PEAK_TFLOPS:-}" ]]; then
        echo "--peak-tflops $PEAK_TFLOPS"
    elif [[ "$(gpu_name)" == "NVIDIA H200" ]]; then
        echo "--peak-tflops 989.4"
    fi
}

section() {
    echo
    echo "=== $* ($(date -u +%H:%M:%S) UTC)"
}

failures=0
# runs one measurement; a failing one is reported and counted, and the next ones still run
run() {
    local status=0
    "$@" || status=$?
    if [[ $status -eq 124 ]]; then
        echo "TIMED OUT: $*"
    elif [[ $status -ne 0 ]]; then
        echo "FAILED (exit $status): $*"
    fi
    if [[ $status -ne 0 ]]; then
        failures=$((failures + 1))
    fi
}

main() {
    section "GPU"
    nvidia-smi --query-gpu=name,memory.total --format=csv
    "$PYTHON" -c 'import torch, lightning, timm; print("torch", torch.__version__, "CUDA", torch.version.cuda, "lightning", lightning.__version__, "timm", timm.__version__)'
    echo "C compiler for --compile (Triton, Inductor): $(command -v cc || command -v gcc || echo none)"
    # shellcheck disable=SC2207  # two words or none
    local peak=($(peak_args))

    section "vitlab ViT vs timm's, eager: ViT-S/B/L, train and inference"
    run "$PYTHON" "${VIT[@]}" --model vit_s vit_b vit_l ${peak[@]+"${peak[@]}"}

    section "MAE step vs supervised step, eager: ViT-B, ViT-L, ViT-L with a 1-block decoder"
    local mae=(benchmarks/mae_vs_supervised.py --device cuda --batch-size 64 --steps 20 --warmup 3)
    run "$PYTHON" "${mae[@]}" --model vit_b
    run "$PYTHON" "${mae[@]}" --model vit_l
    run "$PYTHON" "${mae[@]}" --model vit_l --decoder-depth 1

    # last, and bounded: the longest (about a minute of compiling per model and mode), so that a
    # slow compile costs this row only (train is printed before inference starts compiling)
    section "vitlab ViT vs timm's, compiled: ViT-B, train and inference"
    run timeout 210 "$PYTHON" "${VIT[@]}" --model vit_b --compile ${peak[@]+"${peak[@]}"}

    section "done, $failures failed"
    [[ $failures -eq 0 ]]
}

if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    main 2>&1 | tee -a "$OUT/bench.log"
else
    main
fi

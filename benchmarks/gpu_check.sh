#!/usr/bin/env bash
# GPU readiness in one run (< 8 minutes on one CUDA GPU): the CUDA tests, the loss speed on CUDA, the 224-px
# photo data row on CUDA, and a fixed number of ResNet-50 training steps at 224 px on real CUB photographs
# (images/s and the share of data + loss in a step). Everything it prints goes to stdout (tee it).
#
#   benchmarks/gpu_check.sh [CUB_ROOT]      CUB_ROOT: the folder holding CUB_200_2011/
#                                           (default ../shared/data/CUB_200_2011_subset)
#
# Environment: PYTHON (default .venv/bin/python), CACHE_DIR (decoded-image cache; default a temporary
# folder), GPU_CHECK_TINY=1 (tiny settings on the CPU: what tests/benchmarks/test_gpu_check.py runs to keep
# this script working on machines without a GPU; its numbers mean nothing).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
CUB=${1:-../shared/data/CUB_200_2011_subset}
CACHE_DIR=${CACHE_DIR:-$(mktemp -d -t clusterloss-gpu-check-XXXXXX)}
TINY=${GPU_CHECK_TINY:-0}

if [[ ! -d "$CUB/CUB_200_2011" && ! -f "$CUB/images.txt" ]]; then
    echo "error: no CUB_200_2011 folder under $CUB (pass the folder that holds it)" >&2
    exit 1
fi

if [[ "$TINY" == 1 ]]; then
    DEVICE=cpu
    LOSS_ARGS=(--sizes 32 --repeats 1 --no-oracle)
    DATA_ARGS=(--batches 2 --baseline-batches 1 --photo-batches 1 --photo-baseline-batches 1 --threads 1)
    STEP_ARGS=(--arch resnet18 --image-size 64 --dim 16 --batch-classes 4 --batch-samples 2 --steps 2
               --warmup 1 --amp none)
    TEST_ARGS=(tests/data/test_data_loader.py -k cuda)
else
    DEVICE=cuda
    LOSS_ARGS=(--sizes 128,256,512,1024 --repeats 5 --no-oracle)
    DATA_ARGS=(--batches 300 --baseline-batches 20 --photo-batches 50 --photo-baseline-batches 8)
    STEP_ARGS=(--arch resnet50 --image-size 224 --dim 512 --batch-classes 32 --batch-samples 4 --steps 30
               --warmup 5 --amp bf16)
    TEST_ARGS=(tests -k "cuda or gpu")
fi

section() { echo; echo "== $1 ($(date -u +%H:%M:%S) UTC)"; }

section "machine"
"$PYTHON" - <<'EOF'
import platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
else:
    print("no CUDA device visible")
EOF
if [[ "$DEVICE" == cuda ]] && ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "error: no CUDA device; run with GPU_CHECK_TINY=1 for the CPU dry run" >&2
    exit 1
fi

section "CUDA tests"
"$PYTHON" -m pytest -q -rs -p no:cacheprovider "${TEST_ARGS[@]}"

section "loss speed on $DEVICE"
"$PYTHON" benchmarks/loss_speed.py --device "$DEVICE" "${LOSS_ARGS[@]}"

section "data speed: 224-px photo rows on $DEVICE"
"$PYTHON" benchmarks/data_speed.py --device "$DEVICE" --cub "$CUB" "${DATA_ARGS[@]}"

section "training steps on CUB photographs ($DEVICE)"
"$PYTHON" benchmarks/photo_train_steps.py --device "$DEVICE" --cub "$CUB" --cache-dir "$CACHE_DIR" \
    "${STEP_ARGS[@]}"

section "done"

#!/bin/bash
# The GPU checks of the issue "GPUs and many GPUs", as two device calls (each < 10 min).
# Prepare once here (see experiments/bench/README.md, "On a GPU"): wheels in .whl/ (ignored).
#   device run, carry [".whl"]:  bash experiments/bench/gpu_check.sh tests     (~5 min)
#   device run, carry [".whl"]:  bash experiments/bench/gpu_check.sh accuracy  (~8 min)
# Everything it prints is also written under $OUT.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/ccg_gpu}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
case "$1" in
tests)
    # the CUDA tests (they skip on a machine without a GPU), then the host-sync check
    timeout 240 python3 -m pytest -q -p no:cacheprovider -rs -k "cuda or CUDA" \
        tests/test_analytic.py tests/test_flows.py tests/test_gb.py tests/test_mapping.py \
        tests/test_openmm_system.py tests/test_registry.py 2>&1 | tail -15 | tee "$OUT/cuda_tests.txt"
    timeout 60 python3 experiments/bench/sync_check.py --batch-size 1024 2>&1 | tee "$OUT/sync.txt"
    # step time and samples/s, eager and compiled, CPU (16 cores here) and the GPU
    timeout 200 python3 -m ccg bench train --devices cpu,cuda --batch-sizes 1024,8192,65536 \
        --compile --repeats 10 --threads 16 --out "$OUT/bench_train.md" 2>&1 | tail -12
    ;;
accuracy)
    # time to accuracy on the GPU: 5 minutes of training, then F on the 36 x 36 grid with
    # enough samples for a standard error <= 0.03 kT, against the REMD references
    timeout 360 python3 -m ccg train --device cuda --minutes 5 --out runs/gpu5 --no-progress \
        2>&1 | tail -4 | tee "$OUT/train.txt"
    for T in 300 450 600; do
        timeout 40 python3 -m ccg free-energy runs/gpu5/model.pt --device cuda --temperature $T \
            --grid 36 --samples 4096 --out runs/gpu5/fes_$T.npz --no-progress 2>&1 | tail -1
        python3 experiments/ala2_reference/compare.py runs/gpu5/fes_$T.npz \
            experiments/ala2_reference/data/remd_ref_${T}K.npz 2>&1 | tail -2
    done | tee "$OUT/accuracy.txt"
    cp runs/gpu5/metrics.json "$OUT/" 2>/dev/null
    ;;
*)
    echo "usage: bash experiments/bench/gpu_check.sh tests|accuracy" >&2; exit 2 ;;
esac

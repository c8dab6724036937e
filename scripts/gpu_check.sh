#!/usr/bin/env bash
# The whole GPU check in one command, for a lent GPU machine with CUDA, numba-cuda, PyTorch and
# JAX installed (issue #22):  bash scripts/gpu_check.sh OUT_DIR [MNIST_DIR]
#   1. benchmarks/gpu_check.py: correctness of every CUDA path and the timings (its summary last);
#   2. examples/train_mnist.py --device cuda, 2 epochs: the user's command, accuracy and s/epoch;
#   3. the CUDA test suite on the GPU instead of the simulator (SRCGRAD_CUDA_TESTS=gpu).
# Wheels in .whl/ (packages the machine lacks, e.g. astor) are installed to a private folder first.
# GPU_PARTS (default "check,train,tests") picks the parts to run.
set -u
parts=",${GPU_PARTS:-check,train,tests},"
out=${1:-benchmarks/results/gpu_check}
mnist=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CACHE_DIR=$(mktemp -d) SRCGRAD_CACHE_DIR=$(mktemp -d)
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/srcgrad-site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/srcgrad-site"
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu \
    --format=csv 2>&1 | tee "$out/nvidia_smi.txt"
python3 -c "import numba, numba_cuda, numpy; print('numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'numpy', numpy.__version__)"
set -o pipefail
check_rc=skipped
if [[ $parts == *,check,* ]]; then
    timeout "${GPU_CHECK_TIMEOUT:-330}" python3 benchmarks/gpu_check.py --out "$out" \
        ${mnist:+--mnist-dir "$mnist"} ${GPU_CHECK_ARGS:-} 2>&1 | tee "$out/gpu_check.log"
    check_rc=$?
fi
if [ -n "$mnist" ] && [[ $parts == *,train,* ]]; then
    # empty caches: epoch 1's time includes every compile, as a new user sees it
    NUMBA_CACHE_DIR=$(mktemp -d) SRCGRAD_CACHE_DIR=$(mktemp -d) timeout "${GPU_TRAIN_TIMEOUT:-90}" \
        python3 examples/train_mnist.py --device cuda --epochs 2 \
        --data "$mnist" --no-download 2>&1 | tail -n 20 | tee "$out/train_mnist_cuda.log"
fi
if [[ $parts == *,tests,* ]]; then
    SRCGRAD_CUDA_TESTS=gpu timeout "${GPU_TESTS_TIMEOUT:-150}" python3 -m pytest tests/cuda -q \
        -p no:cacheprovider -n "${GPU_TEST_WORKERS:-8}" -rf --tb=short -W ignore::Warning \
        > "$out/pytest_cuda_gpu.log" 2>&1
    echo "== CUDA tests on the GPU (rc $?) =="; tail -n 12 "$out/pytest_cuda_gpu.log"
fi
echo "== gpu_check (rc $check_rc) =="; cat "$out/gpu_check.md" 2>/dev/null
[ "$check_rc" = 0 ] || [ "$check_rc" = skipped ]

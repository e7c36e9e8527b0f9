#!/usr/bin/env bash
# GPU check: build with CUDA, run the `gpu` tests and the GPU benchmarks, print a short table.
# Usage (from the repository root on a CUDA machine): bash bench/gpu_check.sh [OUT_DIR]
set -uo pipefail
out=${1:-${OUT:-bench/out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"

# Build in place with the CUDA kernels for Hopper (sm_90).
start=$(date +%s)
HSAFAST_CUDA=ON $py -m pip install -q --no-build-isolation --no-deps --no-cache-dir \
  -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90 -e . > "$out/build.log" 2>&1 \
  || { tail -40 "$out/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
$py -c "import hsafast, json; print(json.dumps(hsafast.build_info()))" | tee "$out/build_info.json"
$py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee "$out/versions.txt"

# GPU tests (the default tier excludes only `slow`; select the gpu ones explicitly).
start=$(date +%s)
$py -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$out/gpu_tests.log" | tail -25
echo "gpu tests: $(( $(date +%s) - start )) s"

# GPU benchmarks.
$py -m bench pool --device cuda 2>&1 | tee "$out/bench_pool_cuda.log" | tail -30
cp bench/out/*.json "$out/" 2>/dev/null || true

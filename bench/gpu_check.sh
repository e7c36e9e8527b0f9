#!/usr/bin/env bash
# GPU check: build with CUDA, run the `gpu` tests and the GPU benchmarks, print a short table.
#
# Usage, from the repository root on a CUDA machine:
#   bash bench/gpu_check.sh [OUT_DIR] [WHEEL_DIR]
# WHEEL_DIR (optional) holds what a machine without internet lacks: openslide-python and
# openslide-bin wheels, nvidia-nvimgcodec-cu13 and nvidia-nvjpeg wheels (GPU JPEG decoding for
# the scorer), libjpeg62-turbo(-dev) .deb files (the native reader's JPEG library) and optionally
# bench/out/synthetic_8000_s0.tif (python -m bench score --size 8000 makes it). They are
# unpacked under /tmp, never into the system. Every step has its own time limit so one slow
# step cannot take the others' time; the table at the end says which ran.
set -uo pipefail
out=${1:-${OUT:-bench/out/gpu}}
wheels=${2:-}
mkdir -p "$out" bench/out
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
summary="$out/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

# step NAME SECONDS COMMAND...: run with a limit, log to $out/NAME.log, note status and time.
step() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  note "$(printf '%-14s rc=%-3s %4ss' "$name" "$rc" $((SECONDS - t0)))"
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$summary"

if [ -n "$wheels" ]; then
  mkdir -p /tmp/gpu_check/jpeg
  for deb in "$wheels"/*.deb; do dpkg -x "$deb" /tmp/gpu_check/jpeg; done
  $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu_check/site \
    "$wheels"/*.whl > "$out/wheels.log" 2>&1 || note "wheels: install failed (see wheels.log)"
  export PYTHONPATH=/tmp/gpu_check/site${PYTHONPATH:+:$PYTHONPATH}
  jpeg=/tmp/gpu_check/jpeg/usr/lib/x86_64-linux-gnu
  export LD_LIBRARY_PATH=$jpeg${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  # the carried headers before any system ones: jconfig.h (the library version) sits in the
  # multiarch folder, and a system copy of another version there breaks the build at run time
  export CPATH=/tmp/gpu_check/jpeg/usr/include/x86_64-linux-gnu:/tmp/gpu_check/jpeg/usr/include
  # a synthetic slide made beforehand (writing one needs imagecodecs, which may be missing)
  cp "$wheels"/synthetic_*.tif bench/out/ 2>/dev/null || true
  jpeg_flags=(-Ccmake.define.JPEG_INCLUDE_DIR=/tmp/gpu_check/jpeg/usr/include
    -Ccmake.define.JPEG_LIBRARY=$jpeg/libjpeg.so)
else
  jpeg_flags=()
fi

# Build in place with the CUDA kernels for Hopper (sm_90).
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
HSAFAST_CUDA=ON step build 240 $py -m pip install -q --no-build-isolation --no-deps \
  --no-cache-dir -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90 "${jpeg_flags[@]}" -e . \
  || { tail -40 "$out/build.log"; exit 1; }
$py -c "import hsafast, json; print(json.dumps(hsafast.build_info()))" | tee -a "$summary"
$py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee -a "$summary"

# The gpu tests (the default tier only excludes `slow`; select the gpu ones explicitly).
step gpu_tests 150 $py -m pytest -q -p no:cacheprovider -m gpu -n 4 tests
grep -E "passed|failed|^FAILED|^ERROR" "$out/gpu_tests.log" | tail -15 | tee -a "$summary"

# Benchmarks, most important first (each writes bench/out/<name>.json).
step bench_score 120 $py -m bench score --device cuda --size 8000 --slides 8 --repeats 3 \
  --encoders hsafast-cnn-s hsafast-vit-t
tail -12 "$out/bench_score.log" | tee -a "$summary"
step bench_pool 60 $py -m bench pool --device cuda --repeats 20
tail -8 "$out/bench_pool.log" | tee -a "$summary"
step bench_embed 60 $py -m bench embed --device cuda --precision bf16 --repeats 3 --size 8000
tail -6 "$out/bench_embed.log" | tee -a "$summary"
step bench_train 75 $py -m bench train --device cuda --steps 20
tail -8 "$out/bench_train.log" | tee -a "$summary"

tar -czf "$out/bench_json.tar.gz" bench/out/*.json 2>/dev/null || true
note "total: ${SECONDS}s"

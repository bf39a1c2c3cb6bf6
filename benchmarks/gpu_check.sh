#!/usr/bin/env bash
# The one script a session with a lent GPU runs (device tool), from the repository root:
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=600)   (steps sum to 580 s)
# It builds the CUDA extension, runs the kernel tests on the GPU, the check CLI and the GPU
# benchmarks, and writes logs + JSON under $OUT (the device tool brings them back; commit them
# under benchmarks/results/<gpu-name>/ with the commit they measured). Each step has its own
# time limit and a failing step does not stop the next: the summary says what passed.
set -uo pipefail
OUT=${OUT:-benchmarks/results/local}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export WEBDA_CUDA_ARCHS=${WEBDA_CUDA_ARCHS:-90}   # the H200 only: halves the build time there
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
PY=${PYTHON:-python3}

declare -A STATUS
step() {  # step NAME SECONDS COMMAND... : runs, logs to $OUT/NAME.log, records the exit status
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  STATUS[$name]=$?
  echo "    exit ${STATUS[$name]} after $((SECONDS - start))s; last lines:"
  tail -n 5 "$OUT/$name.log" | sed 's/^/    /'
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/gpu.txt" 2>&1
git rev-parse HEAD >>"$OUT/gpu.txt" 2>/dev/null

step build 150 $PY -m pip install --no-build-isolation --no-deps -v -e .
step build_info 30 $PY -c "import json, webda_kernels as wk; print(json.dumps({'build_info': wk.build_info(), 'backends': wk.available_backends()}, indent=1, default=str))"
step check 90 $PY -m webda_kernels.check
# Kernel tests only: the data/training tests need PyAV, which the GPU image does not have.
KERNEL_TESTS=$(ls tests/test_grad_reverse.py tests/test_dispatch.py tests/test_check_cli.py tests/test_topk*.py \
  tests/test_topt*.py tests/test_residual_conv2plus1d*.py tests/test_conv2plus1d*.py tests/test_winograd*.py 2>/dev/null)
step tests 130 $PY -m pytest -q -x --timeout=120 $KERNEL_TESTS
step bench 180 $PY -m pytest benchmarks/bench_grad_reverse.py benchmarks/bench_topk_similarity.py \
  benchmarks/bench_topt_attention.py benchmarks/bench_residual_conv2plus1d.py --benchmark-only -q \
  --benchmark-json="$OUT/bench.json"

{
  echo "{"
  first=1
  for name in build build_info check tests bench; do
    [ $first -eq 1 ] || echo ","
    first=0
    printf '  "%s": %s' "$name" "${STATUS[$name]:-null}"
  done
  echo
  echo "}"
} >"$OUT/summary.json"
cat "$OUT/summary.json"

#!/usr/bin/env bash
# The one script a session with a lent GPU runs (device tool), from the repository root, with the
# PyAV wheels beside it (see "Wheels") and the commit it measures (the copy there has no .git):
#   run(command="WEBDA_COMMIT=<git rev-parse HEAD> bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
#
# The machine: one H100 or H200 (sm_90), 16 cores, Python 3.12, torch 2.11 (cu130), Triton 3.6,
# nvcc 13, pytest-xdist, pytest-timeout, pytest-benchmark and hypothesis installed; no PyAV, no
# network, a cold Triton cache. One call of at most 8 minutes.
#
# Steps, in this order: correctness first, then speed, then the trainer. Each has its own time
# limit and runs to its end whatever the others did (no -x anywhere); as soon as a step ends, its
# log is appended to $OUT/log.txt, its JUnit XML or benchmark JSON to $OUT/results.tar and its
# status to $OUT/summary.json, so a step cut by the call's end loses only itself. The pytest
# steps run what benchmarks/gpu_plan.py lists, which CI runs on a simulated GPU machine first
# (tests/test_gpu_dry_run.py).
#
#   step                        limit  estimate from a cold cache
#   env                           20      5 s   nvidia-smi, versions, the carried wheels installed
#   build                        120     45 s   pip install -e . (CPU module; CUDA module for sm_90 only)
#   tests-dispatch                40     20 s   13 cases, 4 in subprocesses
#   tests-grad_reverse            40     20 s    16 Triton specializations to compile
#   tests-topk_similarity         75     45 s   127
#   tests-topt_attention          75     40 s   127, about 60 of them compiled by the step before
#   tests-residual_conv2plus1d    90     50 s   126
#   check                         60     30 s    31, 10 of them new
#   bench-attention               60     30 s   paper shape and bank 2^20, bf16; eager, triton, cuda
#   bench-residual_conv2plus1d    45     25 s   the four ResNet-34 stages, bf16, channels_last_3d
#   bench-grad_reverse            20      5 s
#   bench-train_step              75     40 s   one step of each stage, paper sizes, bf16 autocast;
#                                               reference, auto, triton, cuda
#   smoke                        120     60 s   make-dataset --preset tiny, train-image, train-video
#                                               (2 steps each, CUDA, --amp bf16)
#   total                        840    415 s
# The limits sum to more than the call's 8 minutes on purpose: a step that ends early leaves its
# time to the later ones, and the call's own limit ends the script. How the estimates were made
# (docs/kernels.md, "The GPU run"): the build from the CPU time nvcc and g++ took here for the two
# modules (20 s and 13 s on one core, which 16 cores split by file); each test step from the
# Triton kernel specializations it launches (counted on the simulated GPU machine with
# WEBDA_TRITON_LAUNCHES, tests/gpu_dry_run/simulated_gpu.py; 376 in all) at about 0.7 s per
# compile, spread over 8 processes (pytest-xdist), plus 10 to 15 s of start-up per step; the
# benchmarks from their cases (about 1 s each: warm-up, 100 ms of CUDA events, 10 timed rounds;
# 3 to 5 s for a training step at the paper's sizes) plus about 25 compiles; the smoke from the
# tiny preset's run time on the CPU here (data preparation is CPU work there too).
#
# Wheels: the machine has no PyAV, scenedetect or platformdirs (the smoke needs them). Before the
# call, in the repository root (.whl/ is ignored by git):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     av==18.1.0 scenedetect==0.7.2 platformdirs==4.14.9
# Without them the smoke step is skipped (and says so); every other step runs.
#
# Outputs (at most 8 files come back from $OUT): summary.json, log.txt, results.tar (JUnit XML of
# the tests, benchmark JSON per step, the smoke runs' metrics), bench.json (the benchmark steps
# merged: commit it as benchmarks/results/<gpu>/bench.json with the commit it measured, then run
# python benchmarks/report.py), machine.txt.
set -uo pipefail
OUT=${OUT:-benchmarks/results/local}
mkdir -p "$OUT"
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1
export WEBDA_CUDA_ARCHS=${WEBDA_CUDA_ARCHS:-90}  # sm_90 only: the H100 and H200 (half the build time)
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
PY=${PYTHON:-python3}
SUMMARY=()  # one JSON object per finished step

step() {  # step NAME LIMIT COMMAND...: runs COMMAND under LIMIT seconds, then files its log and status
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
  local status=$?
  local seconds=$((SECONDS - start))
  echo "    exit $status after ${seconds}s"
  tail -n 4 "$WORK/$name.log" | sed 's/^/    /'
  { echo "===== $name: exit $status after ${seconds}s (limit ${limit}s)"; cat "$WORK/$name.log"; } >>"$OUT/log.txt"
  for file in "$WORK/$name".*; do  # its JUnit XML, benchmark JSON, metrics
    [[ $file == *.log ]] || tar -rf "$OUT/results.tar" -C "$WORK" "$(basename "$file")"
  done
  SUMMARY+=("{\"step\": \"$name\", \"exit\": $status, \"seconds\": $seconds, \"limit\": $limit}")
  (IFS=,; echo "[${SUMMARY[*]}]") >"$OUT/summary.json.tmp" && mv "$OUT/summary.json.tmp" "$OUT/summary.json"
}

has() {  # has MODULE: whether python can import it
  $PY -c "import $1" 2>/dev/null
}

plan_step() {  # plan_step NAME LIMIT ARGS...: pytest on benchmarks/gpu_plan.py's cases of NAME, plus ARGS
  local name=$1 limit=$2
  shift 2
  local args
  mapfile -t args < <($PY benchmarks/gpu_plan.py "$name")
  step "$name" "$limit" $PY -m pytest "${args[@]}" -q -rfE -p no:cacheprovider "$@"
}

test_step() {  # test_step NAME LIMIT: one op's GPU tests, spread over processes when pytest-xdist is here
  local extra=(--junitxml="$WORK/$1.xml")
  has xdist && extra+=(-n 8)  # Triton compiles in 8 processes at once
  has pytest_timeout && extra+=(--timeout=120)
  plan_step "$1" "$2" "${extra[@]}"
}

bench_step() {  # bench_step NAME LIMIT: benchmarks, their JSON merged into $OUT/bench.json after each
  plan_step "$1" "$2" --benchmark-only --benchmark-json="$WORK/$1.json"
  compgen -G "$WORK/bench-*.json" >/dev/null || return 0
  $PY - "$OUT/bench.json" "$WORK"/bench-*.json <<'EOF'
import json, sys
runs = [json.load(open(path)) for path in sys.argv[2:]]
merged = dict(runs[0], benchmarks=[bench for run in runs for bench in run["benchmarks"]])
json.dump(merged, open(sys.argv[1], "w"), indent=1)
EOF
}

smoke() {  # the tiny dataset, then 2 steps of each stage on CUDA with bf16 autocast
  local data=$WORK/smoke/data flags=(--preset tiny --steps 2 --device cuda --amp bf16 --workers 2 --no-progress)
  $PY -m webda make-dataset --preset tiny --out "$data" &&
    $PY -m webda train-image --data "$data" --out "$WORK/smoke/image" "${flags[@]}" &&
    $PY -m webda train-video --data "$data" --out "$WORK/smoke/video" --init "$WORK/smoke/image/last.pt" "${flags[@]}"
  local status=$?
  for stage in image video; do
    [ -f "$WORK/smoke/$stage/metrics.jsonl" ] && cp "$WORK/smoke/$stage/metrics.jsonl" "$WORK/smoke.$stage-metrics.jsonl"
  done
  return $status
}

machine() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "commit: ${WEBDA_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  $PY -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__)"
  if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  else
    echo "no .whl/: the smoke step will be skipped (it needs PyAV)"
  fi
}

export WORK PY
export -f machine smoke  # step runs them under timeout, in a child bash
step env 20 bash -c machine
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
cp "$WORK/env.log" "$OUT/machine.txt"
step build 120 $PY -m pip install --no-build-isolation --no-deps -v -e .
$PY -c "import json, webda_kernels as wk; print(json.dumps({'build_info': wk.build_info(),
  'backends': wk.available_backends()}, indent=1, default=str))" >>"$OUT/machine.txt" 2>&1

test_step tests-dispatch 40
test_step tests-grad_reverse 40
test_step tests-topk_similarity 75
test_step tests-topt_attention 75
test_step tests-residual_conv2plus1d 90
step check 60 $PY -m webda_kernels.check

bench_step bench-attention 60
bench_step bench-residual_conv2plus1d 45
bench_step bench-grad_reverse 20
bench_step bench-train_step 75

if has av && has scenedetect; then
  step smoke 120 bash -c smoke
else
  echo "=== smoke skipped: PyAV or scenedetect is not installed (carry .whl/, see the header)" | tee -a "$OUT/log.txt"
fi
cat "$OUT/summary.json"

#!/usr/bin/env bash
# The one script a session with a lent GPU runs (device tool), from the repository root, with the
# PyAV wheels beside it (see "Wheels"):
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
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
#   step                        limit  estimate (cold cache)
#   env                           20      5 s   nvidia-smi, versions, the carried wheels installed
#   build                        120     60 s   pip install -e . (CPU module, CUDA module for sm_90)
#   tests-dispatch                40     25 s
#   tests-grad_reverse            40     20 s
#   tests-topk_similarity         60     40 s
#   tests-topt_attention          60     40 s
#   tests-residual_conv2plus1d    60     40 s
#   check                         60     30 s   python -m webda_kernels.check (every backend, CPU and CUDA)
#   bench-attention               45     25 s   topk_similarity, topt_attention: paper shape, bank 2^20 bf16
#   bench-residual_conv2plus1d    30     15 s   the four ResNet-34 stages, bf16, channels_last
#   bench-grad_reverse            15      5 s
#   bench-train_step              45     25 s   one step of each stage, paper sizes, bf16 autocast
#   smoke                         90     45 s   make-dataset --preset tiny, train-image, train-video
#                                               (2 steps each, CUDA, --amp bf16)
#   total                        695    370 s
# The limits sum to more than the call's 8 minutes on purpose: a step that finishes early leaves
# its time to the later ones, and the call's own limit stops the script. How the estimates were
# made: docs/kernels.md, "The GPU run" (Triton compiles counted per step, build timed here).
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
  has xdist && extra+=(-n 4)
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
  git rev-parse HEAD 2>/dev/null || echo "commit: unknown (no git)"
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
test_step tests-topk_similarity 60
test_step tests-topt_attention 60
test_step tests-residual_conv2plus1d 60
step check 60 $PY -m webda_kernels.check

bench_step bench-attention 45
bench_step bench-residual_conv2plus1d 30
bench_step bench-grad_reverse 15
bench_step bench-train_step 45

if has av && has scenedetect; then
  step smoke 90 bash -c smoke
else
  echo "=== smoke skipped: PyAV or scenedetect is not installed (carry .whl/, see the header)" | tee -a "$OUT/log.txt"
fi
cat "$OUT/summary.json"

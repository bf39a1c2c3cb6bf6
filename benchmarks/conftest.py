"""Shared benchmark harness on pytest-benchmark.

Every benchmark calls the ``measure`` fixture once:

    def test_bench_x(measure):
        measure(fn, group="grad_reverse fwd+bwd 4096x4096 float32", provider="eager", device=dev)

``group`` names what is compared (op, mode, shape, dtype): rows of one group are compared
with each other; ``provider`` names who computes it ("eager", "compile", "webda-cpu",
"webda-triton", "webda-cuda", "faiss", ...). ``measure`` warms up, records peak memory
(extra bytes allocated by one call) and the time: pytest-benchmark's calibrated rounds on
the CPU; on CUDA, ``triton.testing.do_bench`` (CUDA events, after warm-up) whose median is
stored as ``device_ms`` (report.py prefers it).

Speed-up over eager on the CPU is measured in pairs: a group's "eager" callable (its benchmark
runs first) is kept, and every other provider of the group then runs ``PAIRED_ROUNDS`` rounds
alternating with it; ``paired_speedup`` is the median of the per-round ratios. On a shared
machine whose speed drifts over seconds this ratio is far steadier than one of two medians
timed minutes apart. The saved JSON records the device name, torch/triton/CUDA versions and
the git commit; at the end a table of speed-ups over the "eager" row of each group is
printed (``report.py`` turns the JSON into README tables).
"""

from __future__ import annotations

import ctypes
import os
import platform
import statistics
import subprocess
import time
from collections import OrderedDict, defaultdict

import pytest
import torch

BASELINE = "eager"
PAIRED_ROUNDS = 15
PAIRED_ROUND_SECONDS = 0.1
# The eager callables of the most recent groups (they hold their inputs alive).
_BASELINE_FNS: "OrderedDict[str, object]" = OrderedDict()
_KEPT_BASELINES = 4

# glibc allocator settings (mallopt). Timing runs in glibc's steady state for a training loop:
# buffers up to 32 MB (its largest dynamic mmap threshold) are reused from the heap, not mapped
# afresh, so a call pays no page faults for its temporaries (in this VM a fresh 4.8 MB buffer
# costs ~1.2 ms of faults, as much as a convolution). The peak-memory reading first returns
# the heap's free pages to the system (malloc_trim), so every page a call touches counts.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_HEAP_MMAP_THRESHOLD = 32 << 20
_libc = ctypes.CDLL("libc.so.6")
_libc.mallopt(_M_TRIM_THRESHOLD, 2 * _HEAP_MMAP_THRESHOLD)
_libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_MMAP_THRESHOLD)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        return f"{model} ({os.cpu_count()} cores)"
    except (OSError, StopIteration):
        return platform.machine()


def _git_commit() -> str:
    """HEAD's commit, or WEBDA_COMMIT where the tree is a copy without .git (the GPU machine's)."""
    if os.environ.get("WEBDA_COMMIT"):
        return os.environ["WEBDA_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def peak_memory_bytes(fn, device: torch.device) -> int:
    """Extra bytes at the peak of one call of ``fn`` (allocator high-water mark minus the start)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    # CPU: the process's resident high-water mark, reset before the call (Linux), after the
    # heap's free pages went back to the system so that reusing them counts.
    _libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    fn()
    return max(0, (_status_kib("VmHWM") - before) * 1024)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _seconds_per_call(fn, device: torch.device, calls: int) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / calls


def paired_speedup(fn, baseline, device: torch.device, rounds: int = PAIRED_ROUNDS) -> float:
    """Median over ``rounds`` of baseline time / fn time, each round timed in the order baseline,
    fn, fn, baseline (so that a drift or an after-effect of the previous call cancels), each side
    repeated to at least PAIRED_ROUND_SECONDS so short calls are not timer noise."""
    once = _seconds_per_call(fn, device, 1) + _seconds_per_call(baseline, device, 1)
    calls = max(1, round(PAIRED_ROUND_SECONDS / once))

    def ratio() -> float:
        base = _seconds_per_call(baseline, device, calls)
        mine = _seconds_per_call(fn, device, calls) + _seconds_per_call(fn, device, calls)
        return (base + _seconds_per_call(baseline, device, calls)) / mine

    return statistics.median(ratio() for _ in range(rounds))


@pytest.fixture(name="paired_speedup")
def paired_speedup_fixture():
    """:func:`paired_speedup`, for benchmarks that compare two ways of running an op themselves."""
    return paired_speedup


@pytest.fixture
def measure(benchmark):
    def run(fn, *, group: str, provider: str, device, **info) -> None:
        device = torch.device(device)
        benchmark.group = group
        benchmark.extra_info.update(provider=provider, device=str(device), device_name=device_name(device), **info)
        for _ in range(2):  # warm-up: compile, autotune, caches
            fn()
        if device.type == "cuda":
            import triton.testing

            torch.cuda.synchronize(device)
            benchmark.extra_info["device_ms"] = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")

            def timed():
                fn()
                torch.cuda.synchronize(device)

            benchmark.pedantic(timed, rounds=10, iterations=1)
        else:
            benchmark(fn)
        if provider == BASELINE:
            _BASELINE_FNS[group] = fn
            while len(_BASELINE_FNS) > _KEPT_BASELINES:
                _BASELINE_FNS.popitem(last=False)
        elif group in _BASELINE_FNS and device.type == "cpu":  # CUDA-event medians are steady already
            benchmark.extra_info["paired_speedup"] = paired_speedup(fn, _BASELINE_FNS[group], device)
        benchmark.extra_info["peak_mem_bytes"] = peak_memory_bytes(fn, device)

    return run


def pytest_benchmark_update_json(config, benchmarks, output_json):
    import triton

    output_json["webda"] = {
        "commit": _git_commit(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else device_name(torch.device("cpu")),
        "cpu_threads": torch.get_num_threads(),
    }


def _seconds(bench) -> float:
    ms = bench.extra_info.get("device_ms")
    return ms / 1e3 if ms is not None else bench.stats.median


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups = defaultdict(list)
    for bench in session.benchmarks:
        groups[bench.group].append(bench)
    tr = terminalreporter
    tr.write_sep("=", "webda: speed-up over eager (paired rounds, * = ratio of medians; peak extra memory)")
    for group, rows in sorted(groups.items(), key=lambda kv: str(kv[0])):
        base = next((b for b in rows if b.extra_info.get("provider") == BASELINE), None)
        tr.write_line(f"{group}")
        for b in sorted(rows, key=_seconds):
            paired = b.extra_info.get("paired_speedup")
            if paired is not None:
                ratio = f"{paired:6.2f}x "
            else:
                ratio = f"{_seconds(base) / _seconds(b):6.2f}x*" if base else "     - "
            mem = b.extra_info.get("peak_mem_bytes", 0) / 2**20
            tr.write_line(f"    {b.extra_info.get('provider', b.name):<16} {_seconds(b) * 1e3:10.3f} ms  {ratio}  {mem:9.1f} MiB")

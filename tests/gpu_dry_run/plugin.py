"""pytest plugin of the GPU dry run: every case runs on the simulated GPU (simulated_gpu.py).

Loaded with ``-p plugin`` by tests/test_gpu_dry_run.py, in a process that
``sitecustomize.py`` made the simulated GPU machine. Tests run on the values-backed GPU
(host memory, so their checks run); benchmark cases (GPU sizes) on the shapes-only one, with
``measure`` and ``paired_speedup`` calling each function once. Cases run in the reverse of the
order the GPU script runs them (files and the cases in each), so that a case that passes there
only because an earlier one ran first fails here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import simulated_gpu

_SHAPES_ONLY = []  # (node id, why the case stopped early)
_NOT_SIMULATED = []  # (node id, why the case could not run)


def pytest_configure(config):
    os.environ["WEBDA_SIMULATED_GPU"] = "device"  # the processes a case starts run on the simulated GPU
    # measure() runs each benchmark once, without pytest-benchmark's fixture
    config.addinivalue_line("filterwarnings", "ignore:Benchmark fixture was not used")


def pytest_collection_modifyitems(session, config, items):
    items.reverse()


def _is_benchmark(item) -> bool:
    return Path(str(item.fspath)).parent.name == "benchmarks"


def _measure_once(fn, *, group, provider, device, **info):
    fn()


def _paired_once(fn, baseline, device, rounds=1):
    baseline()
    fn()
    return 1.0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    simulated_gpu.label = item.nodeid
    benchmark = _is_benchmark(item)
    if benchmark:
        for name, fake in (("measure", _measure_once), ("paired_speedup", _paired_once)):
            if name in item.funcargs:
                item.funcargs[name] = fake
    with simulated_gpu.SimulatedGpu("meta" if benchmark else "cpu"):
        try:
            return (yield)
        except simulated_gpu.NotSimulated as stop:
            _NOT_SIMULATED.append((item.nodeid, str(stop)))
        except simulated_gpu.ValuesNeeded as stop:
            if not benchmark:
                raise
            _SHAPES_ONLY.append((item.nodeid, str(stop).splitlines()[0]))
        return None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    tr.write_sep("=", "GPU dry run: simulated GPU machine (values-backed for tests, shapes-only for benchmarks)")
    tr.write_line(f"{len(_SHAPES_ONLY)} benchmark cases stopped at their first value read (checked up to it):")
    for nodeid, why in _SHAPES_ONLY:
        tr.write_line(f"    {nodeid}: {why}")
    tr.write_line(f"{len(_NOT_SIMULATED)} cases not run (they trace ops on the simulated GPU):")
    for nodeid, why in _NOT_SIMULATED:
        tr.write_line(f"    {nodeid}: {why}")

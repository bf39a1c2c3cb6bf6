"""The GPU dry run: the test and benchmark cases that benchmarks/gpu_check.sh runs on the GPU
machine (benchmarks/gpu_plan.py), run here on a simulated GPU machine (tests/gpu_dry_run/).

It fails where a case would fail on any GPU machine for a reason that is not the kernels: inputs
built on a device its backend does not serve (a GPU kernel handed host memory, CPU and GPU
tensors mixed), a backend asked for arguments it documents as unsupported, a test that expects
a CPU-only machine, or a case that passes only after another file ran first (the dry run runs
the cases in the reverse order). What the simulated GPU cannot show is what its kernels
compute: the GPU backends run the reference there (simulated_gpu.py says how).
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gpu_plan", ROOT / "benchmarks" / "gpu_plan.py")
gpu_plan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_plan)


def _dry_run(steps, selection):
    """pytest on the simulated GPU machine, on the files of ``steps`` with ``selection``."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "tests" / "gpu_dry_run"), env.get("PYTHONPATH")) if p)
    env["WEBDA_SIMULATED_GPU"] = "machine"
    files = [f for step in steps.values() for f in step]
    command = [sys.executable, "-m", "pytest", "-p", "plugin", "-p", "no:cacheprovider", "-q", "-rfE", *files,
               *selection]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
    report = result.stdout[-12000:] + result.stderr[-3000:]
    assert result.returncode == 0, f"the GPU dry run failed: {' '.join(command[3:])}\n{report}"
    return result.stdout


def test_gpu_tests_pass_on_a_simulated_gpu_machine():
    out = _dry_run(gpu_plan.TEST_STEPS, gpu_plan.TEST_SELECTION)
    assert re.search(r"\d+ passed", out), out[-3000:]


def test_gpu_benchmarks_run_on_a_simulated_gpu_machine():
    out = _dry_run(gpu_plan.BENCH_STEPS, gpu_plan.BENCH_SELECTION)
    assert re.search(r"\d+ passed", out), out[-3000:]


def test_gpu_script_runs_every_step_of_the_plan_to_its_end():
    """No step stops at its first failure (-x hid most kernels' tests once), and the script runs
    each step of the plan, by name."""
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    for step in [*gpu_plan.TEST_STEPS, *gpu_plan.BENCH_STEPS]:
        args = gpu_plan.arguments(step)
        assert not {"-x", "--exitfirst"} & set(args) and not any(a.startswith("--maxfail") for a in args), step
        assert re.search(rf"^(test|bench)_step {step} \d+$", script, re.M), f"benchmarks/gpu_check.sh does not run {step}"
    assert not re.search(r"pytest[^\n]*\s(-x|--exitfirst|--maxfail)", script)

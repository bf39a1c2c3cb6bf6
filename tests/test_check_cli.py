"""``python -m webda_kernels.check``: passes on this build, fails loudly on a wrong kernel."""

import os
import subprocess
import sys

import torch

import webda_kernels as wk
from webda_kernels import check


def test_check_cli_passes_and_lists_every_op():
    # As a user runs it: without TRITON_INTERPRET, which the CLI sets itself when there is no GPU.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "webda_kernels.check", "--quick"], capture_output=True,
                            text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    for spec in wk._SPECS:
        assert f"{spec.name} " in result.stdout
    assert " cpu " in result.stdout and " triton " in result.stdout
    assert " 0 failed" in result.stdout


def test_check_cli_exits_nonzero_on_a_wrong_result(monkeypatch, capsys):
    def wrong(backend, device, dtype, quick):
        x = torch.randn(5, dtype=torch.float64)
        return [("d x", "grad", x.to(dtype) + 1, x.to(dtype), x)]

    monkeypatch.setitem(check.CASES, "grad_reverse", wrong)
    monkeypatch.setattr(wk, "_SPECS", [s for s in wk._SPECS if s.name == "grad_reverse"])
    assert check.main(["--quick"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_cli_reports_a_crash_as_a_failure(monkeypatch, capsys):
    def crash(backend, device, dtype, quick):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(check.CASES, "grad_reverse", crash)
    monkeypatch.setattr(wk, "_SPECS", [s for s in wk._SPECS if s.name == "grad_reverse"])
    assert check.main(["--quick"]) == 1
    assert "kernel exploded" in capsys.readouterr().out


def test_check_and_tests_hold_float32_kernels_to_ieee_float32_references(monkeypatch):
    """No TF32 in the float32 references: in the tests (conftest) and in the check CLI."""
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    seen = []

    def record(backend, device, dtype, quick):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return []

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # cuDNN's default on CUDA
    monkeypatch.setitem(check.CASES, "grad_reverse", record)
    monkeypatch.setattr(wk, "_SPECS", [s for s in wk._SPECS if s.name == "grad_reverse"])
    check.run_checks(quick=True)
    assert seen and set(seen) == {(False, False)}
    assert torch.backends.cudnn.allow_tf32  # restored after the checks

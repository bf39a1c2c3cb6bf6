"""``python -m webda_kernels.check``: passes on this build, fails loudly on a wrong kernel."""

import subprocess
import sys

import torch

from webda_kernels import check


def test_check_cli_passes_and_lists_every_op():
    result = subprocess.run([sys.executable, "-m", "webda_kernels.check", "--quick"], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "grad_reverse" in result.stdout and " cpu " in result.stdout
    assert "0 failed" in result.stdout


def test_check_cli_exits_nonzero_on_a_wrong_result(monkeypatch, capsys):
    def wrong(backend, device, dtype, quick):
        x = torch.randn(5, dtype=torch.float64)
        return [("d x", "grad", x.to(dtype) + 1, x.to(dtype), x)]

    monkeypatch.setitem(check.CASES, "grad_reverse", wrong)
    assert check.main(["--quick"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_cli_reports_a_crash_as_a_failure(monkeypatch, capsys):
    def crash(backend, device, dtype, quick):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(check.CASES, "grad_reverse", crash)
    assert check.main(["--quick"]) == 1
    assert "kernel exploded" in capsys.readouterr().out

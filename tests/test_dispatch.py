"""Backend dispatch: env override, unavailable backends, fallback when a part is missing."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import webda_kernels as wk
from webda_kernels import _dispatch
from webda_kernels.grad_reverse import SPEC


def test_dispatch_auto_and_explicit_backends():
    cpu, f32 = torch.device("cpu"), torch.float32
    assert _dispatch.resolve(SPEC, "reference", cpu, f32) == "reference"
    assert _dispatch.resolve(SPEC, "cpu", cpu, f32) == "cpu"
    assert _dispatch.resolve(SPEC, "auto", cpu, f32) in _dispatch.serving_backends(SPEC, cpu, f32)


def test_dispatch_env_override(monkeypatch):
    cpu, f32 = torch.device("cpu"), torch.float32
    monkeypatch.setenv(_dispatch.ENV_BACKEND, "cpu")
    assert _dispatch.resolve(SPEC, "auto", cpu, f32) == "cpu"
    assert _dispatch.resolve(SPEC, "reference", cpu, f32) == "reference"  # an explicit argument wins
    monkeypatch.setenv(_dispatch.ENV_BACKEND, "reference")
    assert _dispatch.resolve(SPEC, "auto", cpu, f32) == "reference"
    monkeypatch.setenv(_dispatch.ENV_BACKEND, "cuda")
    with pytest.raises(ValueError, match=r"WEBDA_KERNELS_BACKEND='cuda' cannot run on cpu .* backends that can"):
        _dispatch.resolve(SPEC, "auto", cpu, f32)
    monkeypatch.setenv(_dispatch.ENV_BACKEND, "fastest")
    with pytest.raises(ValueError, match="WEBDA_KERNELS_BACKEND='fastest' is not one of"):
        _dispatch.resolve(SPEC, "auto", cpu, f32)


def test_dispatch_unavailable_backend_names_the_available_ones():
    with pytest.raises(ValueError, match=r"backend='cuda' cannot run on cpu tensors .*\['reference', 'cpu'"):
        _dispatch.resolve(SPEC, "cuda", torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="cannot run on meta"):
        _dispatch.resolve(SPEC, "cpu", torch.device("meta"), torch.float32)


def test_dispatch_available_backends_and_build_info():
    backends = wk.available_backends()
    assert backends["grad_reverse"][:2] == ["reference", "cpu"]
    info = wk.build_info()
    assert info["cpu"]["built"] is True and info["cpu"]["compiler"]
    assert "built" in info["cuda"] and ("archs" in info["cuda"] or info["cuda"]["why"])
    json.dumps(info)  # plain data, printable and loggable


def _run(code: str, env_extra=None):
    """Runs ``code`` in a fresh interpreter (without TRITON_INTERPRET unless given)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300)


def test_dispatch_falls_back_with_one_warning_when_cpu_extension_is_missing():
    result = _run(
        """
        import sys, warnings
        sys.modules["webda_kernels._C_cpu"] = None  # makes the import fail like a missing build
        import torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import webda_kernels as wk
            for _ in range(3):
                x = torch.randn(4, requires_grad=True)
                wk.grad_reverse(x, 2.0).sum().backward()
                assert torch.equal(x.grad, torch.full((4,), -2.0))
            backends = wk.available_backends()
        ours = [w for w in caught if "webda_kernels" in str(w.message)]
        print(len(ours), backends["grad_reverse"], wk.build_info()["cpu"]["built"])
        try:
            wk.grad_reverse(torch.randn(3), backend="cpu")
        except ValueError as err:
            print("ValueError", err)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 ['reference'] False"
    assert lines[1].startswith("ValueError") and "backends that can: ['reference']" in lines[1]


def test_dispatch_triton_on_cpu_only_under_the_interpreter():
    code = "import webda_kernels as wk; print(wk.available_backends()['grad_reverse'])"
    plain = _run(code)
    assert plain.returncode == 0, plain.stderr
    if not torch.cuda.is_available():
        assert "triton" not in plain.stdout
        interpreted = _run(code, {"TRITON_INTERPRET": "1"})
        assert "triton" in interpreted.stdout

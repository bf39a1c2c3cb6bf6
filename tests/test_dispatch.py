"""Backend dispatch: use_backend blocks, the env override, unavailable backends, fallback when a
part is missing."""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import webda_kernels as wk
from webda_kernels import _dispatch
from webda_kernels.grad_reverse import SPEC
from webda_kernels.testing import GPU


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


def _auto() -> str:
    """What ``backend="auto"`` resolves to here for grad_reverse on float32 CPU tensors."""
    return _dispatch.resolve(SPEC, "auto", torch.device("cpu"), torch.float32)


def test_use_backend_replaces_auto_nests_and_restores(monkeypatch):
    monkeypatch.delenv(_dispatch.ENV_BACKEND, raising=False)
    cpu, f32 = torch.device("cpu"), torch.float32
    default = _auto()
    with wk.use_backend("cpu"):
        assert _auto() == "cpu"
        assert _dispatch.resolve(SPEC, "reference", cpu, f32) == "reference"  # an explicit argument wins
        with wk.use_backend("reference"):
            assert _auto() == "reference"
            with wk.use_backend("auto"):  # undoes the enclosing blocks
                assert _auto() == default
            with wk.use_backend(None):
                assert _auto() == default
            assert _auto() == "reference"
        assert _auto() == "cpu"
    assert _auto() == default


def test_use_backend_restores_after_an_exception(monkeypatch):
    monkeypatch.delenv(_dispatch.ENV_BACKEND, raising=False)
    default = _auto()
    with pytest.raises(RuntimeError, match="inside"):
        with wk.use_backend("cpu"):
            raise RuntimeError("inside")
    assert _auto() == default


def test_use_backend_wins_over_the_environment_variable_which_applies_outside(monkeypatch):
    monkeypatch.setenv(_dispatch.ENV_BACKEND, "reference")
    assert _auto() == "reference"
    with wk.use_backend("cpu"):
        assert _auto() == "cpu"
        with wk.use_backend("auto"):
            assert _auto() == "reference"  # no block: the variable applies again
    assert _auto() == "reference"


def test_use_backend_rejects_unknown_names_on_entry():
    with pytest.raises(ValueError, match=r"use_backend: 'fastest' is not one of \('auto', 'reference', 'cpu'"):
        with wk.use_backend("fastest"):
            pass
    with pytest.raises(TypeError, match="use_backend: name must be a string"):
        with wk.use_backend(1):
            pass
    with wk.use_backend("cuda"):  # known but unable to serve CPU tensors: named when an op resolves
        with pytest.raises(ValueError, match=r"use_backend='cuda' cannot run on cpu tensors"):
            _auto()


def test_use_backend_is_local_to_a_thread(monkeypatch):
    monkeypatch.delenv(_dispatch.ENV_BACKEND, raising=False)
    default = _auto()
    entered, release, seen = threading.Event(), threading.Event(), {}

    def other():
        with wk.use_backend("reference"):
            entered.set()
            release.wait(10)
            seen["other"] = _auto()

    with wk.use_backend("cpu"):
        thread = threading.Thread(target=other)
        thread.start()
        assert entered.wait(10)
        seen["main"] = _auto()  # while the other thread is inside its own block
        release.set()
        thread.join(10)
    assert seen == {"main": "cpu", "other": "reference"}
    fresh = []
    thread = threading.Thread(target=lambda: fresh.append(_auto()))
    with wk.use_backend("reference"):
        thread.start()  # a new thread starts outside any block
        thread.join(10)
    assert fresh == [default]


def test_use_backend_is_local_to_an_asyncio_task(monkeypatch):
    monkeypatch.delenv(_dispatch.ENV_BACKEND, raising=False)

    async def run(name, delay):
        with wk.use_backend(name):
            await asyncio.sleep(delay)  # the other task enters its block meanwhile
            return _auto()

    async def both():
        return await asyncio.gather(run("cpu", 0.05), run("reference", 0.0))

    assert asyncio.run(both()) == ["cpu", "reference"]


def _topk_backend_traced(fn, *args):
    """Runs ``torch.compile(fn, fullgraph=True)`` and returns the backend argument of the
    webda::topk_similarity call in the graph it traced."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, fullgraph=True, backend=capture)(*args)
    (node,) = [n for g in graphs for n in g.graph.nodes if "topk_similarity" in str(n.target)]
    return node.args[-1]


def test_use_backend_applies_to_what_is_compiled_and_exported_inside_the_block(monkeypatch):
    monkeypatch.delenv(_dispatch.ENV_BACKEND, raising=False)
    if "cpu" not in wk.available_backends()["topk_similarity"]:
        pytest.skip("the CPU extension is not built")
    query, bank = torch.randn(4, 8), torch.randn(200, 8)  # a bank where auto picks the CPU kernel

    def search(q, b):
        return wk.topk_similarity(q, b, 3)

    assert _topk_backend_traced(search, query, bank) == "cpu"
    with wk.use_backend("reference"):
        assert _topk_backend_traced(search, query, bank) == "reference"
        compiled = torch.compile(search, fullgraph=True)
        values, indices = compiled(query, bank)
        exported = torch.export.export(_Search(), (query, bank))
    want = wk.reference.topk_similarity(query, bank, 3)
    torch.testing.assert_close(values, want[0])
    assert torch.equal(indices, want[1])
    (node,) = [n for n in exported.graph.nodes if "topk_similarity" in str(n.target)]
    assert node.args[-1] == "reference"


class _Search(torch.nn.Module):
    def forward(self, q, b):
        return wk.topk_similarity(q, b, 3)


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
    if not GPU:
        assert "triton" not in plain.stdout
        interpreted = _run(code, {"TRITON_INTERPRET": "1"})
        assert "triton" in interpreted.stdout

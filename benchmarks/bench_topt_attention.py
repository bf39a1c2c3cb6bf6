"""topt_attention / topt_scores: every backend against eager PyTorch and torch.compile.

Providers: "eager" is the oracle ``wk.reference`` (matmul, topk, sum, softmax), "compile" is
``torch.compile`` of it, "webda-auto" is what ``backend="auto"`` picks, "webda-reference" the
op's own reference path (paper shape only: it sorts whole rows), "webda-<backend>" each fast
backend that serves the inputs.

Groups, forward ("fwd") and forward+backward ("fwd+bwd"):
- paper shape: ``topt_attention``, Ns = Nt = 32, D = 512, T = 29; gradients for src, tgt, weight;
- bank shape: ``topt_scores``, Ns = 256, D = 256, T = 32, Nt = 2^18 float32 on CPU, 2^20
  bfloat16 on GPU; the backward gives src and weight their gradients and leaves the bank
  (a store of target features) detached, as a trainer attending to a feature bank does.
"""

import pytest
import torch

import webda_kernels as wk
from webda_kernels import _dispatch
from webda_kernels.topt_attention import SPEC

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
# (Ns, Nt, D, T)
PAPER = (32, 32, 512, 29)
BANK = (256, 2**20 if DEVICE.type == "cuda" else 2**18, 256, 32)


def _setup(shape, bank_grad):
    n_src, n_tgt, dim, _ = shape
    torch.manual_seed(0)
    src = torch.randn(n_src, dim, device=DEVICE).to(DTYPE).requires_grad_()
    tgt = torch.nn.functional.normalize(torch.randn(n_tgt, dim, device=DEVICE), dim=1).to(DTYPE)
    weight = (torch.eye(dim, device=DEVICE) + 0.01 * torch.randn(dim, dim, device=DEVICE)).to(DTYPE).requires_grad_()
    return src, tgt.requires_grad_(bank_grad), weight


def _function(kind, provider, top_t):
    """``f(src, tgt, weight)`` of ``provider``: topt_attention at the paper shape, topt_scores at the bank one."""
    if provider in ("eager", "compile"):
        ref = wk.reference.topt_attention if kind == "paper" else wk.reference.topt_scores
        fn = lambda s, t, w: ref(s, t, w, top_t)  # noqa: E731
        return torch.compile(fn, fullgraph=True) if provider == "compile" else fn
    backend = provider.removeprefix("webda-")
    op = wk.topt_attention if kind == "paper" else wk.topt_scores
    return lambda s, t, w: op(s, t, w, top_t, backend=backend)


def _timed(fn, inputs, mode):
    if mode == "fwd":
        def run():
            with torch.no_grad():
                fn(*inputs)
        return run

    grad = torch.randn(inputs[0].shape[0], device=DEVICE, dtype=DTYPE)

    def run():
        for x in inputs:
            x.grad = None
        fn(*inputs).backward(grad)
    return run


def _providers(kind):
    names = ["eager", "compile", "webda-auto"] + (["webda-reference"] if kind == "paper" else [])
    return names + [f"webda-{b}" for b in ("cpu", "triton", "cuda") if b in _dispatch.serving_backends(SPEC, DEVICE, DTYPE)]


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize(
    "kind,provider",
    [pytest.param("paper", p, id=f"paper-{p}") for p in _providers("paper")]
    + [pytest.param("bank", p, id=f"bank-{p}") for p in _providers("bank")],
)
def test_bench_topt_attention(measure, kind, provider, mode):
    shape = PAPER if kind == "paper" else BANK
    n_src, n_tgt, dim, top_t = shape
    inputs = _setup(shape, bank_grad=kind == "paper")
    op = "topt_attention" if kind == "paper" else "topt_scores"
    group = f"{op} {mode} {kind} Ns={n_src} Nt={n_tgt} D={dim} T={top_t} {str(DTYPE)[6:]} {DEVICE.type}"
    measure(_timed(_function(kind, provider, top_t), inputs, mode), group=group, provider=provider, device=DEVICE)

"""Gradient reversal: forward+backward of every backend against eager and torch.compile."""

import pytest
import torch

import webda_kernels as wk
from webda_kernels import _dispatch
from webda_kernels.grad_reverse import SPEC

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
# A discriminator tap of the paper's image stage: 96 images x 512 x 7 x 7 features.
SHAPE = (96, 512, 7, 7)


def _setup():
    x = torch.randn(SHAPE, device=DEVICE, dtype=DTYPE, requires_grad=True)
    grad = torch.randn(SHAPE, device=DEVICE, dtype=DTYPE)
    return x, grad


def _fwd_bwd(fn, x, grad):
    def run():
        x.grad = None
        fn(x).backward(grad)

    return run


PROVIDERS = {
    "eager": lambda x: wk.reference.grad_reverse(x, 0.5),
    "compile": torch.compile(lambda x: wk.reference.grad_reverse(x, 0.5), fullgraph=True),
}
for _backend in ("cpu", "triton", "cuda"):
    if _backend in _dispatch.serving_backends(SPEC, DEVICE, DTYPE):
        PROVIDERS[f"webda-{_backend}"] = (lambda b: lambda x: wk.grad_reverse(x, 0.5, backend=b))(_backend)


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_bench_grad_reverse(measure, provider):
    x, grad = _setup()
    group = f"grad_reverse fwd+bwd {'x'.join(map(str, SHAPE))} {str(DTYPE)[6:]} {DEVICE.type}"
    measure(_fwd_bwd(PROVIDERS[provider], x, grad), group=group, provider=provider, device=DEVICE)

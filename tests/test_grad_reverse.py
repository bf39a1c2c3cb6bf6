"""Gradient reversal: every backend against the reference, layouts, dtypes, compile/export."""

import math

import pytest
import torch

import webda_kernels as wk
import webda_kernels.nn as wnn
from webda_kernels import _dispatch
from webda_kernels.grad_reverse import SPEC
from webda_kernels.testing import DTYPES, assert_matches_reference, backend_params


def _cases():
    return backend_params(SPEC, DTYPES)


def _grad_layouts(device, dtype):
    """Gradients of shape (6, 5, 7) in every layout the backward must read correctly."""
    g = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    return {
        "contiguous": g(6, 5, 7),
        "transposed": g(7, 5, 6).transpose(0, 2),
        "sliced": g(12, 5, 9)[::2, :, 1:8],
        "expanded": g(1, 5, 1).expand(6, 5, 7),
        "scalar-expanded": g(()).expand(6, 5, 7),
    }


def _reversed_grad(fn, x, grad):
    x = x.detach().requires_grad_()
    fn(x).backward(grad)
    return x.grad


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_grad_reverse_backward_matches_reference_on_every_layout(backend, device, dtype):
    coeff = 0.1 + 2 * torch.rand(()).item()
    x = torch.randn(6, 5, 7, device=device, dtype=dtype)
    for name, grad in _grad_layouts(device, dtype).items():
        got = _reversed_grad(lambda t: wk.grad_reverse(t, coeff, backend=backend), x, grad)
        same = _reversed_grad(lambda t: wk.reference.grad_reverse(t, coeff), x, grad)
        ref64 = _reversed_grad(lambda t: wk.reference.grad_reverse(t, coeff), x.double(), grad.double())
        # Same arithmetic as torch (float32 math for half types): bit-identical to the reference.
        assert torch.equal(got, same), name
        assert_matches_reference(got, same, ref64, "grad", what=name)
        assert got.dtype == dtype and got.shape == x.shape


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_grad_reverse_backward_keeps_channels_last_and_large_sizes(backend, device, dtype):
    x = torch.randn(3, 17, 33, 65, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    got = _reversed_grad(lambda t: wk.grad_reverse(t, 0.75, backend=backend), x, grad)
    assert torch.equal(got, _reversed_grad(lambda t: wk.reference.grad_reverse(t, 0.75), x, grad))
    assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_grad_reverse_tensor_coeff_and_edge_values(backend, device, dtype):
    x = torch.randn(33, device=device, dtype=dtype)
    grad = torch.randn(33, device=device, dtype=dtype)
    for coeff in (0.0, -1.5, torch.tensor(0.3), torch.tensor([2.0], dtype=torch.float64, device=device)):
        got = _reversed_grad(lambda t: wk.grad_reverse(t, coeff, backend=backend), x, grad)
        value = float(coeff)
        expected = _reversed_grad(lambda t: wk.reference.grad_reverse(t, value), x, grad)
        assert torch.equal(got, expected), coeff


@pytest.mark.parametrize("backend", ["reference", "cpu"] + (["triton"] if _dispatch.triton_interpreted() else []))
def test_grad_reverse_gradcheck_float64(backend):
    # A reversal layer's gradient is deliberately not the derivative of its forward: undo it
    # with the reference layer (backward x -1/c), and the composition must pass gradcheck.
    c = 0.7

    def f(t):
        y = wk.reference.grad_reverse(wk.grad_reverse(t, c, backend=backend), 1.0 / c)
        return y * y.sin()

    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x,))


def test_grad_reverse_forward_is_zero_copy():
    x = torch.randn(5, 4, requires_grad=True)
    y = wk.grad_reverse(x, 2.0)
    assert y is not x
    assert y.data_ptr() == x.data_ptr()
    assert y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    assert torch.equal(y, x)
    t = torch.randn(5, 8)[:, ::2]
    assert wk.grad_reverse(t).data_ptr() == t.data_ptr() and wk.grad_reverse(t).stride() == t.stride()


def test_grad_reverse_empty_and_zero_dim():
    for shape in [(0, 3), ()]:
        x = torch.randn(shape, requires_grad=True)
        wk.grad_reverse(x, 0.5, backend="cpu").sum().backward()
        assert torch.equal(x.grad, torch.full(shape, -0.5))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_grad_reverse_backward_opcheck(backend):
    grad = torch.randn(3, 5).t()
    coeff = torch.tensor(0.5, dtype=torch.float64)
    torch.library.opcheck(torch.ops.webda.grad_reverse_backward.default, (grad, coeff, backend))


@pytest.mark.parametrize("backend,compiler", [("reference", "aot_eager"), ("cpu", "aot_eager"), ("cpu", "inductor")])
def test_grad_reverse_compiles_fullgraph(backend, compiler):
    def f(x, w):
        return (wk.grad_reverse(x @ w, 0.5, backend=backend) ** 2).sum()

    x = torch.randn(4, 3)
    w = torch.randn(3, 3, requires_grad=True)
    compiled = torch.compile(f, fullgraph=True, backend=compiler)
    compiled(x, w).backward()
    got = w.grad.clone()
    w.grad = None
    f(x, w).backward()
    torch.testing.assert_close(got, w.grad)


def test_grad_reverse_exports():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), wnn.GradientReversal(0.5), torch.nn.ReLU())
    x = torch.randn(2, 3)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


def test_grad_reverse_module_and_schedule():
    layer = wnn.WarmStartGradientReversal(gamma=10.0, lo=0.0, hi=2.0, max_iters=100, auto_step=True)
    assert layer.coeff == 0.0
    x = torch.randn(3, requires_grad=True)
    layer(x).sum().backward()
    assert torch.equal(x.grad, torch.zeros(3))  # coefficient 0 at the start
    for _ in range(49):
        layer.step()
    expected = 2.0 * (2.0 / (1.0 + math.exp(-10.0 * 0.5)) - 1.0)
    assert layer.iters == 50 and layer.coeff == pytest.approx(expected)
    restored = wnn.WarmStartGradientReversal(lo=0.0, hi=2.0, max_iters=100)
    restored.load_state_dict(layer.state_dict())
    assert restored.coeff == layer.coeff
    assert wnn.dann_coeff(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert wnn.dann_coeff(-3.0) == 0.0


@pytest.mark.parametrize(
    "x,coeff,error,match",
    [
        ([1.0, 2.0], 1.0, TypeError, "x must be a torch.Tensor"),
        (torch.arange(3), 1.0, TypeError, "x must be float16"),
        (torch.randn(3), float("nan"), ValueError, "coeff must be finite"),
        (torch.randn(3), float("inf"), ValueError, "coeff must be finite"),
        (torch.randn(3), torch.tensor(float("inf")), ValueError, "coeff must be finite"),
        (torch.randn(3), "1.0", TypeError, "coeff must be a float"),
        (torch.randn(3), torch.ones(2), TypeError, "0-d floating tensor"),
        (torch.randn(3), torch.tensor(1), TypeError, "0-d floating tensor"),
        (torch.randn(3), torch.tensor(1.0, device="meta"), ValueError, "coeff is on meta"),
    ],
)
def test_grad_reverse_bad_input(x, coeff, error, match):
    with pytest.raises(error, match=match):
        wk.grad_reverse(x, coeff)


def test_grad_reverse_bad_backend():
    with pytest.raises(ValueError, match="not one of"):
        wk.grad_reverse(torch.randn(3), backend="fast")
    with pytest.raises(ValueError, match=r"backends that can: \['reference', 'cpu'"):
        wk.grad_reverse(torch.randn(3), backend="cuda")
    with pytest.raises(TypeError, match="backend must be a string"):
        wk.grad_reverse(torch.randn(3), backend=None)

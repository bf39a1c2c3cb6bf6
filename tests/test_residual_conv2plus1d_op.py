"""The residual_conv2plus1d op: every backend against the float64 reference, layouts,
gradients, frozen spatial weights, the CPU backend's Winograd spatial conv, saved memory,
auto's choice, opcheck / compile / export, bad inputs.

Half-precision cases run without relu: through the whole op, rounding z in half precision
flips the sign of pre-activations near zero differently in each implementation, and one
flipped mask entry moves a gradient by a whole grad_y entry. Each backend's temporal kernels
are checked on their own, relu included, with a shared mask in
tests/test_residual_conv2plus1d_kernels.py.
"""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional, Tuple

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import webda_kernels as wk
from webda_kernels import _dispatch, _winograd_conv3x3 as winograd
from webda_kernels.residual_conv2plus1d import SPEC, residual_conv2plus1d_op, residual_conv2plus1d_temporal_backward
from webda_kernels.testing import DTYPES, GPU, HALF_DTYPES, assert_matches_reference, representable_randn, saved_bytes

CL3D = torch.channels_last_3d


def _device(backend: str) -> str:
    return "cuda" if backend == "cuda" or (backend == "triton" and GPU) else "cpu"


def _serves(backend: str, dtype: torch.dtype) -> bool:
    return backend in _dispatch.serving_backends(SPEC, torch.device(_device(backend)), dtype)


class Config(NamedTuple):
    shape: Tuple[int, int, int, int, int]  # x: (N, Cin, T, H, W)
    channels: int
    kernel: Tuple[int, int]
    kt: int
    stride: object
    padding: object
    biases: bool
    relu: bool
    layout: str  # contiguous | channels_last | sliced (a T-slice of channels_last_3d) | permuted (no format)
    tiny: bool  # small enough for Triton's interpreter


CONFIGS = {
    "t1-c1-1x1": Config((2, 1, 1, 1, 1), 1, (1, 1), 1, 1, 0, True, True, "contiguous", True),
    "t3-c3-3x3": Config((1, 3, 3, 5, 7), 3, (3, 3), 3, 1, 1, False, False, "channels_last", True),
    "t5-c17-kt5-stride2x1": Config((2, 4, 5, 7, 5), 17, (3, 3), 5, (2, 1), (1, 0), True, True, "sliced", True),
    "t2-kt5-3x1-permuted": Config((1, 5, 2, 6, 3), 6, (3, 1), 5, 1, (1, 0), True, False, "permuted", True),
    "stem-7x7-stride2": Config((1, 3, 3, 13, 11), 8, (7, 7), 3, 2, 3, True, True, "channels_last", False),
    "t12-c64": Config((1, 64, 12, 5, 5), 64, (3, 3), 3, 1, 1, True, True, "channels_last", False),
    "t3-c40-h1-w9": Config((2, 7, 3, 1, 9), 40, (1, 3), 3, (1, 2), (0, 1), False, True, "contiguous", False),
}


class Inputs(NamedTuple):
    """Float64 values representable in the tested dtype, so both references see the same numbers."""

    x_base: torch.Tensor
    x_view: Callable[[torch.Tensor], torch.Tensor]  # x = x_view(x_base.to(dtype)): the layout survives
    params: Dict[str, Optional[torch.Tensor]]
    options: dict


def _inputs(config: Config, dtype: torch.dtype, device: str) -> Inputs:
    n, cin, t, h, w = config.shape
    c, (kh, kw) = config.channels, config.kernel

    def rand(*size, scale=1.0):
        return representable_randn(*size, dtype=dtype, scale=scale, device=device)

    views = {
        "contiguous": (rand(n, cin, t, h, w), lambda b: b),
        "channels_last": (rand(n, cin, t, h, w).contiguous(memory_format=CL3D), lambda b: b),
        "sliced": (rand(n, cin, 2 * t + 1, h, w).contiguous(memory_format=CL3D), lambda b: b[:, :, 1::2]),
        "permuted": (rand(h, cin, n, w, t), lambda b: b.permute(2, 1, 4, 0, 3)),  # T innermost
    }
    base, view = views[config.layout]
    params = dict(
        spatial_weight=rand(c, cin, kh, kw, scale=(cin * kh * kw) ** -0.5),
        temporal_weight=rand(c, c, config.kt, scale=(c * config.kt) ** -0.5),
        spatial_bias=rand(c) if config.biases else None,
        temporal_bias=rand(c) if config.biases else None,
    )
    options = dict(stride=config.stride, padding=config.padding, activation="relu" if config.relu else None)
    return Inputs(base, view, params, options)


def _run(fn, inputs: Inputs, dtype, train_spatial: bool, grad=None):
    """(y, grad x, {param: grad}, grad y) of fn; spatial parameters train only if train_spatial."""
    x = inputs.x_view(inputs.x_base.to(dtype)).detach().requires_grad_()
    leaves = {}
    for name, p in inputs.params.items():
        if p is not None:
            leaves[name] = p.to(dtype).detach().requires_grad_(train_spatial or name.startswith("temporal"))
    y = fn(x, **leaves, **inputs.options)
    if grad is None:
        grad = torch.randn(y.shape, dtype=dtype, device=y.device).double()
    y.backward(grad.to(dtype))
    return y, x.grad, {name: t.grad for name, t in leaves.items() if t.requires_grad}, grad


def _op(backend):
    return lambda x, **kw: wk.residual_conv2plus1d(x, **kw, backend=backend)


def _cases():
    for backend in ("reference", "cpu", "triton", "cuda"):
        for dtype in DTYPES:
            for name, config in CONFIGS.items():
                if backend == "triton" and not GPU and not config.tiny:
                    continue
                if backend in ("reference", "cpu") and dtype in HALF_DTYPES and name != "t3-c3-3x3":
                    continue  # float16 is only upcast around the CPU kernel: one config is enough
                marks = [pytest.mark.skipif(not GPU, reason="needs a GPU")] if backend == "cuda" else []
                yield pytest.param(backend, dtype, name, id=f"{backend}-{str(dtype)[6:]}-{name}", marks=marks)


@pytest.mark.parametrize("train_spatial", [False, True], ids=["frozen", "trained"])
@pytest.mark.parametrize("backend,dtype,config_name", list(_cases()))
def test_residual_conv2plus1d_matches_float64_reference(backend, dtype, config_name, train_spatial):
    if not _serves(backend, dtype):
        pytest.skip(f"{backend} does not serve {dtype} here")
    torch.manual_seed(sum(map(ord, backend + config_name)) + train_spatial)
    inputs = _inputs(CONFIGS[config_name], dtype, _device(backend))
    if dtype in HALF_DTYPES:
        inputs.options["activation"] = None  # see the module docstring
    y, gx, grads, grad = _run(_op(backend), inputs, dtype, train_spatial)
    y_same, gx_same, grads_same, _ = _run(wk.reference.residual_conv2plus1d, inputs, dtype, train_spatial, grad)
    y64, gx64, grads64, _ = _run(wk.reference.residual_conv2plus1d, inputs, torch.float64, train_spatial, grad)
    assert y.dtype == dtype and y.shape == y64.shape and gx.shape == gx64.shape
    assert_matches_reference(y, y_same, y64, "output", what="y")
    assert_matches_reference(gx, gx_same, gx64, "grad", what="grad x")
    assert set(grads) == set(grads64)
    for name in grads64:
        assert grads[name].dtype == dtype
        assert_matches_reference(grads[name], grads_same[name], grads64[name], "grad", what=f"grad {name}")


# The CPU backend's Winograd spatial conv (webda_kernels/_winograd_conv3x3.py) serves 3x3 stride-1
# convolutions of at least MIN_CHANNELS channels; with the bar lowered to 1 the 3x3 configs take it.
WINOGRAD_CONFIGS = {
    **{name: CONFIGS[name] for name in ("t3-c3-3x3", "t12-c64")},
    "wide-128": Config((1, 128, 3, 5, 6), 128, (3, 3), 3, 1, 1, True, True, "contiguous", False),
    "wide-144-pad0-sliced": Config((2, 144, 2, 4, 3), 136, (3, 3), 3, 1, 0, False, True, "sliced", False),
}


@pytest.mark.parametrize("train_spatial", [False, True], ids=["frozen", "trained"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("config_name", list(WINOGRAD_CONFIGS))
def test_residual_conv2plus1d_cpu_winograd_spatial_conv_matches_float64_reference(monkeypatch, config_name, dtype,
                                                                                  train_spatial):
    if not _serves("cpu", dtype):
        pytest.skip("the CPU extension is not built")
    config = WINOGRAD_CONFIGS[config_name]
    if config.channels < winograd.MIN_CHANNELS:
        monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    calls = []
    monkeypatch.setattr(winograd, "_run", lambda *a, run=winograd._run: calls.append(1) or run(*a))
    torch.manual_seed(len(config_name) + train_spatial)
    inputs = _inputs(config, dtype, "cpu")
    y, gx, grads, grad = _run(_op("cpu"), inputs, dtype, train_spatial)
    assert len(calls) == 2  # the forward and x's gradient
    y_same, gx_same, grads_same, _ = _run(wk.reference.residual_conv2plus1d, inputs, dtype, train_spatial, grad)
    y64, gx64, grads64, _ = _run(wk.reference.residual_conv2plus1d, inputs, torch.float64, train_spatial, grad)
    assert_matches_reference(y, y_same, y64, "output", what="y")
    assert_matches_reference(gx, gx_same, gx64, "grad", what="grad x")
    assert set(grads) == set(grads64)
    for name in grads64:
        assert_matches_reference(grads[name], grads_same[name], grads64[name], "grad", what=f"grad {name}")


def test_residual_conv2plus1d_matches_float64_reference_on_an_empty_batch():
    inputs = _inputs(CONFIGS["t3-c3-3x3"]._replace(shape=(0, 3, 3, 5, 7)), torch.float32, "cpu")
    y, gx, grads, _ = _run(_op("cpu"), inputs, torch.float32, train_spatial=False)
    assert y.shape == (0, 3, 3, 5, 7) and gx.shape == (0, 3, 3, 5, 7)
    assert not grads["temporal_weight"].any()


# ----------------------------------------------------------------------------- gradients
GRADCHECK_BACKENDS = ["reference", "cpu"]


@pytest.mark.parametrize("backend", GRADCHECK_BACKENDS)
def test_residual_conv2plus1d_gradcheck_every_input(backend):
    torch.manual_seed(0)
    x = torch.randn(2, 2, 3, 4, 3, dtype=torch.float64).contiguous(memory_format=CL3D).requires_grad_()
    params = [torch.randn(3, 2, 3, 2, dtype=torch.float64), torch.randn(3, 3, 3, dtype=torch.float64) / 3,
              torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    params = [p.requires_grad_() for p in params]
    fn = lambda *a: wk.residual_conv2plus1d(*a, stride=(2, 1), padding=(1, 0), activation="relu",  # noqa: E731
                                            backend=backend)
    assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=True)


@pytest.mark.parametrize("backend", GRADCHECK_BACKENDS)
def test_residual_conv2plus1d_gradcheck_kt_above_t_frozen_spatial(backend):
    torch.manual_seed(1)
    x = torch.randn(1, 3, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    spatial_weight = torch.randn(4, 3, 1, 3, dtype=torch.float64)
    temporal_weight = (torch.randn(4, 4, 5, dtype=torch.float64) / 4).requires_grad_()
    fn = lambda x, w: wk.residual_conv2plus1d(x, spatial_weight, w, padding=(0, 1), backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, temporal_weight), fast_mode=True)


class _ConvolutionBackwardLog(TorchDispatchMode):
    """Records the output_mask of every 2D convolution_backward (the spatial conv's)."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default and args[2].dim() == 4:
            self.masks.append(list(args[10]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("train_spatial", [False, True], ids=["frozen", "trained"])
def test_residual_conv2plus1d_frozen_spatial_weight_gradient_is_never_computed(backend, train_spatial):
    inputs = _inputs(CONFIGS["stem-7x7-stride2"], torch.float32, "cpu")
    with _ConvolutionBackwardLog() as log:
        _, grad_x, grads, _ = _run(_op(backend), inputs, torch.float32, train_spatial)
    assert log.masks == [[True, train_spatial, train_spatial]]
    assert grad_x is not None
    assert ("spatial_weight" in grads) == ("spatial_bias" in grads) == train_spatial


@pytest.mark.parametrize("channels,stride,frozen,picks", [
    (64, 1, True, "cpu"),  # where benchmarks show it ahead: frozen, 3x3, stride 1, >= 64 channels
    (32, 1, True, "reference"),  # below MIN_CHANNELS: not benchmarked, not picked
    (128, 2, True, "reference"),  # no Winograd for stride 2
    (128, 1, False, "reference"),  # a trained spatial weight: not benchmarked, not picked
])
def test_residual_conv2plus1d_auto_picks_cpu_only_where_benchmarks_show_it_ahead(monkeypatch, channels, stride, frozen,
                                                                                   picks):
    if not _serves("cpu", torch.float32):
        pytest.skip("the CPU extension is not built")
    x = torch.randn(1, channels, 2, 5, 5)
    spatial_weight = torch.randn(channels, channels, 3, 3, requires_grad=not frozen)
    seen = []
    monkeypatch.setattr(_dispatch, "resolve", lambda *a, resolve=_dispatch.resolve: seen.append(resolve(*a)) or seen[-1])
    wk.residual_conv2plus1d(x, spatial_weight, torch.zeros(channels, channels, 3), stride=stride, padding=1)
    assert seen == [picks]


def test_residual_conv2plus1d_without_any_gradient_needs_no_backward():
    x = torch.randn(1, 3, 2, 4, 4)
    y = wk.residual_conv2plus1d(x, torch.randn(5, 3, 3, 3), torch.randn(5, 5, 3), padding=1, backend="cpu")
    assert y.grad_fn is None


# ----------------------------------------------------------------------------- layouts and memory
@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("layout,channels_last", [("contiguous", False), ("channels_last", True),
                                                  ("sliced", True), ("permuted", False)])
def test_residual_conv2plus1d_output_and_grad_follow_x_memory_format(backend, layout, channels_last):
    inputs = _inputs(CONFIGS["t3-c3-3x3"]._replace(layout=layout), torch.float32, "cpu")
    x = inputs.x_view(inputs.x_base.float()).requires_grad_()
    y = _op(backend)(x, **{k: v.float() for k, v in inputs.params.items() if v is not None}, **inputs.options)
    (grad_x,) = torch.autograd.grad(y, x, torch.randn_like(y))  # as returned, before .grad's layout rules
    memory_format = CL3D if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=memory_format)
    assert grad_x.is_contiguous(memory_format=memory_format)


def _saved_bytes(fn, inputs: Inputs, train_spatial: bool) -> int:
    return saved_bytes(lambda: _run(fn, inputs, torch.float32, train_spatial))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("train_spatial", [False, True], ids=["frozen", "trained"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_residual_conv2plus1d_saves_no_more_than_the_reference(backend, train_spatial, relu, layout):
    config = CONFIGS["t12-c64"]._replace(relu=relu, layout=layout)
    inputs = _inputs(config, torch.float32, "cpu")
    ours = _saved_bytes(_op(backend), inputs, train_spatial)
    reference = _saved_bytes(wk.reference.residual_conv2plus1d, inputs, train_spatial)
    assert ours <= reference
    if not train_spatial:  # exactly the two weights, z and, under relu, y: never x
        weights = sum(inputs.params[name].numel() * 4 for name in ("spatial_weight", "temporal_weight"))
        activation = inputs.x_base.numel() * 4  # z and y have x's shape here
        assert ours == weights + (1 + relu) * activation


# ----------------------------------------------------------------------------- torch.library / compile / export
def _op_args(backend, requires_grad=True):
    torch.manual_seed(0)
    device = _device(backend)
    x = torch.randn(2, 3, 3, 5, 4, device=device).contiguous(memory_format=CL3D)
    params = [torch.randn(4, 3, 3, 3, device=device) / 5, torch.randn(4, 4, 3, device=device) / 4,
              torch.randn(4, device=device), torch.randn(4, device=device)]
    leaves = [t.requires_grad_(requires_grad) for t in [x] + params]
    return leaves


OP_BACKENDS = [pytest.param(b, marks=[pytest.mark.skipif(not GPU, reason="needs a GPU")] if b == "cuda" else [])
               for b in ("reference", "cpu", "triton", "cuda")]


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_residual_conv2plus1d_opcheck(backend):
    if not _serves(backend, torch.float32):
        pytest.skip(f"{backend} is not available here")
    x, sw, tw, sb, tb = _op_args(backend)
    torch.library.opcheck(residual_conv2plus1d_op, (x, sw, tw, sb, tb, [2, 1], [1, 1], True, backend))
    torch.library.opcheck(residual_conv2plus1d_op, (x, sw, tw, None, None, [1, 1], [0, 1], False, backend))
    y, z = residual_conv2plus1d_op(x.detach(), sw.detach(), tw.detach(), sb.detach(), tb.detach(), [1, 1], [1, 1],
                                   True, backend)
    for need_weight, need_bias in ((True, True), (False, False), (True, False)):
        torch.library.opcheck(residual_conv2plus1d_temporal_backward,
                              (torch.randn_like(y), z, y, tw.detach(), True, need_weight, need_bias, backend))
    torch.library.opcheck(residual_conv2plus1d_temporal_backward,
                          (torch.randn_like(y), z, None, tw.detach(), False, True, True, backend))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_residual_conv2plus1d_compiles_with_fullgraph(backend):
    def block(x, sw, tw, sb, tb):
        return wk.residual_conv2plus1d(x, sw, tw, sb, tb, stride=1, padding=1, activation="relu", backend=backend)

    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True)
    eager_args, compiled_args = _op_args(backend), _op_args(backend)
    y_eager, y_compiled = block(*eager_args), compiled(*compiled_args)
    torch.testing.assert_close(y_compiled, y_eager)
    grad = torch.randn_like(y_eager)
    y_eager.backward(grad)
    y_compiled.backward(grad)
    for eager, comp in zip(eager_args, compiled_args):
        torch.testing.assert_close(comp.grad, eager.grad)


class _Block(torch.nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.backend = backend
        _, sw, tw, sb, tb = _op_args(backend, requires_grad=False)
        self.spatial_weight, self.temporal_weight = torch.nn.Parameter(sw), torch.nn.Parameter(tw)
        self.spatial_bias, self.temporal_bias = torch.nn.Parameter(sb), torch.nn.Parameter(tb)

    def forward(self, x):
        return wk.residual_conv2plus1d(x, self.spatial_weight, self.temporal_weight, self.spatial_bias,
                                       self.temporal_bias, stride=(1, 2), padding=1, activation="relu",
                                       backend=self.backend)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_residual_conv2plus1d_exports(backend):
    block = _Block(backend)
    x = _op_args(backend, requires_grad=False)[0]
    exported = torch.export.export(block, (x,))
    assert any("residual_conv2plus1d" in str(node.target) for node in exported.graph.nodes)
    torch.testing.assert_close(exported.module()(x), block(x))


# ----------------------------------------------------------------------------- bad input
def _good():
    return dict(x=torch.randn(1, 3, 2, 5, 5), spatial_weight=torch.randn(4, 3, 3, 3),
                temporal_weight=torch.randn(4, 4, 3), spatial_bias=torch.randn(4), temporal_bias=torch.randn(4))


BAD_INPUTS = {
    "x-4d": (dict(x=torch.randn(1, 3, 5, 5)), ValueError, "x must be 5-D"),
    "x-int": (dict(x=torch.ones(1, 3, 2, 5, 5, dtype=torch.int64)), TypeError, "x must be float16"),
    "x-not-tensor": (dict(x=[1.0]), TypeError, "x must be a torch.Tensor"),
    "x-no-frames": (dict(x=torch.randn(1, 3, 0, 5, 5)), ValueError, "at least one frame"),
    "spatial-weight-3d": (dict(spatial_weight=torch.randn(4, 3, 3)), ValueError, "spatial_weight must be 4-D"),
    "channel-mismatch": (dict(x=torch.randn(1, 2, 2, 5, 5)), ValueError, "x has 2 channels"),
    "no-output-channels": (dict(spatial_weight=torch.randn(0, 3, 3, 3), temporal_weight=torch.randn(0, 0, 3),
                                spatial_bias=None, temporal_bias=None), ValueError, "at least one"),
    "temporal-weight-shape": (dict(temporal_weight=torch.randn(4, 5, 3)), ValueError, "temporal_weight must be (4, 4"),
    "even-kt": (dict(temporal_weight=torch.randn(4, 4, 2)), ValueError, "temporal_weight's kt must be odd"),
    "spatial-bias-shape": (dict(spatial_bias=torch.randn(3)), ValueError, "spatial_bias must have shape (4,)"),
    "temporal-bias-2d": (dict(temporal_bias=torch.randn(4, 1)), ValueError, "temporal_bias must be 1-D"),
    "stride-zero": (dict(stride=0), ValueError, "stride must be >= 1"),
    "stride-triple": (dict(stride=(1, 1, 1)), TypeError, "stride must be an int or a pair"),
    "stride-float": (dict(stride=1.5), TypeError, "stride must be an int or a pair"),
    "stride-float-in-pair": (dict(stride=(1, 2.0)), TypeError, "stride must be an int or a pair"),
    "padding-float": (dict(padding=0.5), TypeError, "padding must be an int or a pair"),
    "stride-bool": (dict(stride=True), TypeError, "stride must be an int or a pair"),
    "padding-negative": (dict(padding=(0, -1)), ValueError, "padding must be >= 0"),
    "empty-output": (dict(x=torch.randn(1, 3, 2, 2, 5), padding=0), ValueError, "empty along H"),
    "activation": (dict(activation="gelu"), ValueError, "activation must be None or 'relu'"),
    "dtype-mismatch": (dict(temporal_weight=torch.randn(4, 4, 3, dtype=torch.float64)), TypeError,
                       "temporal_weight has dtype torch.float64"),
    "device-mismatch": (dict(temporal_bias=torch.randn(4, device="meta")), ValueError, "temporal_bias is on meta"),
    "backend-unknown": (dict(backend="fast"), ValueError, "is not one of"),
    "backend-wrong-device": (dict(backend="cuda"), ValueError, "cannot run on cpu"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_residual_conv2plus1d_rejects_bad_input(name):
    changes, error, message = BAD_INPUTS[name]
    kwargs = dict(_good(), stride=1, padding=1, activation="relu", **{})
    kwargs.update(changes)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        wk.residual_conv2plus1d(**kwargs)

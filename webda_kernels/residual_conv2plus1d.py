"""Frozen-spatial + residual-temporal (2+1)D block (paper 3.6, Fig. 5b).

``z = conv2d(x_t) + spatial_bias`` on every frame, ``y = act(z + conv_t(z) + temporal_bias)``
with ``conv_t`` a (C, C, kt) convolution along T (zero padding kt // 2, stride 1).

The spatial conv stays on the vendor library through torch (oneDNN / cuDNN on the N*T
frames, in x's layout: channels-last frames for a channels_last_3d x, else contiguous ones,
so a caller picks the layout as for torch's own convolutions), except on the ``cpu``
backend for wide 3x3 stride-1 convs, which it runs (and their input gradient) by Winograd
(``webda_kernels/_winograd_conv3x3.py``). The temporal part runs fused on a backend, with z,
y and their gradients as (N, C, T, H, W) tensors in ``torch.channels_last_3d`` memory format
(rows of C contiguous channels), where the temporal conv is an (N*T*H*W, C*kt) x (C*kt, C)
implicit GEMM. Every backend implements the pair in ``_TEMPORAL[backend]``:

- ``forward(z, weight, bias, relu) -> y``: ``y = act(z + conv_t(z) + bias)``, channels_last_3d;
- ``backward(grad_y, z, y, weight, relu, need_weight, need_bias) -> (grad_z, grad_weight,
  grad_bias)``: with ``g = grad_y * (y > 0)`` under relu (else grad_y; y is None then),
  ``grad_z = g + conv_t^T(g)``, ``grad_weight[c, c', j] = sum g[:, c, t] z[:, c', t + j - p]``,
  ``grad_bias = sum g`` (both in weight's dtype, None unless asked).

Layers, top to bottom: those backends (reference in torch, C++ CPU, CUDA; Triton in
``webda_kernels/triton/residual_conv2plus1d.py``), the ``webda::residual_conv2plus1d`` custom
op (returns y and z) with its fake and autograd, the ``webda::residual_conv2plus1d_temporal_backward``
op, and the public ``residual_conv2plus1d``. Backward saves z, y (only under relu) and x
(only when the spatial weight or bias needs a gradient); a frozen spatial conv costs one
input-gradient convolution and never computes its weight gradient.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from webda_kernels import _dispatch, _extension, _validate
from webda_kernels import _winograd_conv3x3 as winograd
from webda_kernels._dtypes import GPU_FLOATING, accumulation_dtype
from webda_kernels._frames import from_frames, to_frames

SPEC = _dispatch.OpSpec(
    name="residual_conv2plus1d",
    # The CPU kernel computes in float32 / float64; float16 is upcast around it (torch has no
    # fast float16 convolution on the CPU). bfloat16 stays on the reference, whose oneDNN
    # bfloat16 convolutions are the better path there.
    dtypes={"cpu": frozenset({torch.float16, torch.float32, torch.float64}), "triton": GPU_FLOATING,
            "cuda": GPU_FLOATING},
    auto={"cpu": ("cpu",)},  # cuda/triton await a GPU benchmark before auto may pick them
)
# ``auto`` picks "cpu" only for a frozen 3x3 stride-1 spatial conv of at least
# winograd.MIN_CHANNELS channels: there the CPU backend's Winograd spatial conv and fused
# temporal kernels beat the reference at the ResNet-34 stages of
# benchmarks/bench_residual_conv2plus1d.py (results in benchmarks/results/cpu-xeon-2core/).
# A trained spatial weight is not benchmarked, so it stays on the reference.
_REFERENCE_SPEC = dataclasses.replace(SPEC, auto={})

CL3D = torch.channels_last_3d


# ----------------------------------------------------------------------------- backends
def _temporal_forward_reference(z, weight, bias, relu):
    kt = weight.shape[2]
    y = z + F.conv3d(z, weight[:, :, :, None, None], bias, padding=(kt // 2, 0, 0))
    if relu:
        y = torch.relu_(y)
    return y.contiguous(memory_format=CL3D)


def _temporal_backward_reference(grad_y, z, y, weight, relu, need_weight, need_bias):
    g = torch.where(y <= 0, 0.0, grad_y) if relu else grad_y  # as relu's own backward
    c, kt = weight.shape[0], weight.shape[2]
    grad_conv, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        g, z, weight[:, :, :, None, None], [c] if need_bias else None, [1, 1, 1], [kt // 2, 0, 0], [1, 1, 1],
        False, [0, 0, 0], 1, [True, need_weight, need_bias],
    )
    grad_z = (g + grad_conv).contiguous(memory_format=CL3D)
    return grad_z, None if grad_weight is None else grad_weight[:, :, :, 0, 0].contiguous(), grad_bias


def _pointer(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _temporal_forward_extension(part, z, weight, bias, relu):
    n, c, t, h, w = z.shape
    y = torch.empty_like(z, memory_format=CL3D)
    stream = (z.device.index, _extension.cuda_stream(z)) if part == "cuda" else ()
    _extension.load(part).residual_temporal_forward(
        z.data_ptr(), weight.data_ptr(), _pointer(bias), y.data_ptr(),
        n, c, t, h * w, weight.shape[2], relu, _extension.dtype_code(z), *stream,
    )
    return y


def _temporal_backward_extension(part, grad_y, z, y, weight, relu, need_weight, need_bias):
    n, c, t, h, w = z.shape
    acc = accumulation_dtype(z.dtype)
    grad_z = torch.empty_like(z, memory_format=CL3D)
    grad_weight = torch.zeros(weight.shape, dtype=acc, device=z.device) if need_weight else None
    grad_bias = torch.zeros((c,), dtype=acc, device=z.device) if need_bias else None
    stream = (z.device.index, _extension.cuda_stream(z)) if part == "cuda" else ()
    _extension.load(part).residual_temporal_backward(
        grad_y.data_ptr(), z.data_ptr(), _pointer(y if relu else None), weight.data_ptr(), grad_z.data_ptr(),
        _pointer(grad_weight), _pointer(grad_bias), n, c, t, h * w, weight.shape[2], relu,
        _extension.dtype_code(z), *stream,
    )
    return grad_z, _cast(grad_weight, weight.dtype), _cast(grad_bias, weight.dtype)


def _cast(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if t is None else t.to(dtype)


# The CPU kernel computes in float32 or float64: float16 is upcast around it.
def _temporal_forward_cpu(z, weight, bias, relu):
    if z.dtype == torch.float16:
        f32 = torch.float32
        return _temporal_forward_extension("cpu", z.float(), weight.float(), _cast(bias, f32), relu).to(z.dtype)
    return _temporal_forward_extension("cpu", z, weight, bias, relu)


def _temporal_backward_cpu(grad_y, z, y, weight, relu, need_weight, need_bias):
    if z.dtype == torch.float16:
        grads = _temporal_backward_extension(
            "cpu", grad_y.float(), z.float(), _cast(y, torch.float32), weight.float(), relu, need_weight, need_bias
        )
        return tuple(_cast(g, z.dtype) for g in grads)
    return _temporal_backward_extension("cpu", grad_y, z, y, weight, relu, need_weight, need_bias)


def _temporal_forward_triton(z, weight, bias, relu):
    from webda_kernels.triton.residual_conv2plus1d import temporal_forward

    return temporal_forward(z, weight, bias, relu)


def _temporal_backward_triton(grad_y, z, y, weight, relu, need_weight, need_bias):
    from webda_kernels.triton.residual_conv2plus1d import temporal_backward

    return temporal_backward(grad_y, z, y, weight, relu, need_weight, need_bias)


_TEMPORAL = {
    "reference": (_temporal_forward_reference, _temporal_backward_reference),
    "cpu": (_temporal_forward_cpu, _temporal_backward_cpu),
    "triton": (_temporal_forward_triton, _temporal_backward_triton),
    "cuda": (
        functools.partial(_temporal_forward_extension, "cuda"),
        functools.partial(_temporal_backward_extension, "cuda"),
    ),
}


# ----------------------------------------------------------------------------- layout helpers
def _channels_last(x: torch.Tensor) -> bool:
    """Whether x is (a view into) channels_last_3d memory: not contiguous, C stride smallest."""
    return not x.is_contiguous() and x.stride(1) < min(x.stride(2), x.stride(3), x.stride(4))


def _memory_format(channels_last: bool, frames: bool = False) -> torch.memory_format:
    """The memory format of a (N, C, T, H, W) tensor, or with ``frames`` of its (N*T, C, H, W) frames."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if frames else CL3D


def _frames(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(N, C, T, H, W) -> (N*T, C, H, W) frames, channels-last or contiguous (a view when x has that layout)."""
    if channels_last:
        return to_frames(x.contiguous(memory_format=CL3D))
    return to_frames(x).contiguous()


def _winograd(backend: str, spatial_weight: torch.Tensor, stride, padding, dtype: torch.dtype) -> bool:
    """Whether the CPU backend runs the spatial conv (and its input gradient) by Winograd."""
    return backend == "cpu" and winograd.applies(spatial_weight, stride, padding, dtype)


def _output_hw(x_shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]):
    return tuple((x_shape[3 + i] + 2 * padding[i] - kernel[i]) // stride[i] + 1 for i in range(2))


# ----------------------------------------------------------------------------- custom ops
@torch.library.custom_op("webda::residual_conv2plus1d", mutates_args=())
def residual_conv2plus1d_op(
    x: torch.Tensor,
    spatial_weight: torch.Tensor,
    temporal_weight: torch.Tensor,
    spatial_bias: Optional[torch.Tensor],
    temporal_bias: Optional[torch.Tensor],
    stride: List[int],
    padding: List[int],
    relu: bool,
    backend: str,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(y, z)``: y in x's memory format, z (the spatial conv's output) channels_last_3d."""
    n, t = x.shape[0], x.shape[2]
    if _winograd(backend, spatial_weight, stride, padding, x.dtype):
        frames = winograd.conv3x3(_frames(x, True), spatial_weight, spatial_bias, padding[0])
    else:
        frames = F.conv2d(_frames(x, _channels_last(x)), spatial_weight, spatial_bias, stride, padding)
    z = from_frames(frames, n, t).contiguous(memory_format=CL3D)
    bias = None if temporal_bias is None else temporal_bias.contiguous()
    y = _TEMPORAL[backend][0](z, temporal_weight.contiguous(), bias, relu)
    return y.contiguous(memory_format=_memory_format(_channels_last(x))), z


@residual_conv2plus1d_op.register_fake
def _(x, spatial_weight, temporal_weight, spatial_bias, temporal_bias, stride, padding, relu, backend):
    ho, wo = _output_hw(x.shape, spatial_weight.shape[2:], stride, padding)
    shape = (x.shape[0], spatial_weight.shape[0], x.shape[2], ho, wo)
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(_channels_last(x)))
    return y, torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=CL3D)


@torch.library.custom_op("webda::residual_conv2plus1d_temporal_backward", mutates_args=())
def residual_conv2plus1d_temporal_backward(
    grad_y: torch.Tensor,
    z: torch.Tensor,
    y: Optional[torch.Tensor],
    temporal_weight: torch.Tensor,
    relu: bool,
    need_weight: bool,
    need_bias: bool,
    backend: str,
) -> List[torch.Tensor]:
    """``[grad_z]`` + ``[grad_temporal_weight]`` if need_weight + ``[grad_temporal_bias]`` if need_bias.

    grad_y, z, y: (N, C, T, H, W) (y only under relu, else None); grad_z is channels_last_3d.
    """
    grad_y = grad_y.contiguous(memory_format=CL3D)
    y = y.contiguous(memory_format=CL3D) if relu else None
    grads = _TEMPORAL[backend][1](grad_y, z.contiguous(memory_format=CL3D), y, temporal_weight.contiguous(),
                                  relu, need_weight, need_bias)
    return [g for g in grads if g is not None]


@residual_conv2plus1d_temporal_backward.register_fake
def _(grad_y, z, y, temporal_weight, relu, need_weight, need_bias, backend):
    grads = [torch.empty_like(z, memory_format=CL3D)]
    if need_weight:
        grads.append(temporal_weight.new_empty(temporal_weight.shape))
    if need_bias:
        grads.append(temporal_weight.new_empty(temporal_weight.shape[:1]))
    return grads


_X, _SPATIAL_WEIGHT, _TEMPORAL_WEIGHT, _SPATIAL_BIAS, _TEMPORAL_BIAS = range(5)


def _setup_context(ctx, inputs, output):
    x, spatial_weight, temporal_weight, spatial_bias, temporal_bias, stride, padding, relu, backend = inputs
    y, z = output
    needs = ctx.needs_input_grad
    ctx.save_for_backward(x if needs[_SPATIAL_WEIGHT] else None, spatial_weight, temporal_weight, z,
                          y if relu else None)
    ctx.mark_non_differentiable(z)
    ctx.set_materialize_grads(False)
    ctx.x_shape = tuple(x.shape)
    ctx.channels_last = _channels_last(x)
    ctx.stride, ctx.padding, ctx.relu, ctx.backend = stride, padding, relu, backend
    ctx.need_spatial = needs[_X] or needs[_SPATIAL_WEIGHT] or needs[_SPATIAL_BIAS]


def _backward(ctx, grad_y, grad_z_unused):
    if grad_y is None:  # grads are not materialised: no gradient reached y
        return (None,) * 9
    x, spatial_weight, temporal_weight, z, y = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grads = residual_conv2plus1d_temporal_backward(
        grad_y, z, y, temporal_weight, ctx.relu, needs[_TEMPORAL_WEIGHT], needs[_TEMPORAL_BIAS], ctx.backend
    )
    grad_z = grads.pop(0)
    grad_temporal_weight = grads.pop(0) if needs[_TEMPORAL_WEIGHT] else None
    grad_temporal_bias = grads.pop(0) if needs[_TEMPORAL_BIAS] else None
    grad_x = grad_spatial_weight = grad_spatial_bias = None
    if ctx.need_spatial:
        n, cin, t, h, w = ctx.x_shape
        x_format, frame_format = _memory_format(ctx.channels_last), _memory_format(ctx.channels_last, frames=True)
        need_x = needs[_X]
        if need_x and _winograd(ctx.backend, spatial_weight, ctx.stride, ctx.padding, grad_z.dtype):
            grad_frames_x = winograd.conv3x3_input_grad(_frames(grad_z, True), spatial_weight, ctx.padding[0])
            grad_x = from_frames(grad_frames_x, n, t).contiguous(memory_format=x_format)
            need_x = False
        if need_x or needs[_SPATIAL_WEIGHT] or needs[_SPATIAL_BIAS]:
            grad_frames = _frames(grad_z, ctx.channels_last)
            # Without x (frozen spatial weight) the input only gives its shape and layout: an
            # uninitialised tensor (an expanded one, as torch.nn.grad.conv2d_input passes, is
            # copied whole by oneDNN's backward).
            if x is None:
                frames = torch.empty((n * t, cin, h, w), dtype=grad_frames.dtype, device=grad_frames.device,
                                     memory_format=frame_format)
            else:
                frames = _frames(x, ctx.channels_last)
            grad_frames_x, grad_spatial_weight, grad_spatial_bias = torch.ops.aten.convolution_backward(
                grad_frames, frames, spatial_weight.contiguous(memory_format=frame_format),
                [spatial_weight.shape[0]] if needs[_SPATIAL_BIAS] else None,
                ctx.stride, ctx.padding, [1, 1], False, [0, 0], 1,
                [need_x, needs[_SPATIAL_WEIGHT], needs[_SPATIAL_BIAS]],
            )
            if grad_frames_x is not None:
                grad_x = from_frames(grad_frames_x, n, t).contiguous(memory_format=x_format)
            if grad_spatial_weight is not None:
                grad_spatial_weight = grad_spatial_weight.contiguous()
    return (grad_x, grad_spatial_weight, grad_temporal_weight, grad_spatial_bias, grad_temporal_bias,
            None, None, None, None)


residual_conv2plus1d_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- public API
def _check_shapes(x, spatial_weight, temporal_weight, spatial_bias, temporal_bias, padding) -> None:
    op = "residual_conv2plus1d"
    c, cin = spatial_weight.shape[:2]
    if x.shape[1] != cin:
        raise ValueError(f"{op}: x has {x.shape[1]} channels but spatial_weight {tuple(spatial_weight.shape)} "
                         f"expects {cin} (spatial_weight is (C, Cin, kh, kw))")
    if min(x.shape[2:]) == 0:
        raise ValueError(f"{op}: x must have at least one frame, row and column, got shape {tuple(x.shape)}")
    if c == 0 or cin == 0:
        raise ValueError(f"{op}: spatial_weight must have at least one input and output channel, "
                         f"got {tuple(spatial_weight.shape)}")
    if temporal_weight.shape[:2] != (c, c):
        raise ValueError(f"{op}: temporal_weight must be ({c}, {c}, kt) to follow spatial_weight "
                         f"{tuple(spatial_weight.shape)}, got {tuple(temporal_weight.shape)}")
    _validate.odd_size(op, "temporal_weight's kt", temporal_weight.shape[2])
    for name, bias in (("spatial_bias", spatial_bias), ("temporal_bias", temporal_bias)):
        if bias is not None and tuple(bias.shape) != (c,):
            raise ValueError(f"{op}: {name} must have shape ({c},), got {tuple(bias.shape)}")
    for i, axis in enumerate("HW"):
        kernel = spatial_weight.shape[2 + i]
        if kernel == 0 or x.shape[3 + i] + 2 * padding[i] < kernel:
            raise ValueError(f"{op}: the spatial output would be empty along {axis}: size {x.shape[3 + i]} "
                             f"with padding {padding[i]} is smaller than the kernel ({kernel})")


def residual_conv2plus1d(
    x: torch.Tensor,
    spatial_weight: torch.Tensor,
    temporal_weight: torch.Tensor,
    spatial_bias: Optional[torch.Tensor] = None,
    temporal_bias: Optional[torch.Tensor] = None,
    stride: Union[int, Tuple[int, int]] = 1,
    padding: Union[int, Tuple[int, int]] = 0,
    activation: Optional[str] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Frozen-spatial + residual-temporal (2+1)D block.

    Args:
        x: (N, Cin, T, H, W), contiguous or channels_last_3d (any strides are accepted).
        spatial_weight: (C, Cin, kh, kw), a 2D conv weight applied to every frame.
        temporal_weight: (C, C, kt), kt odd, applied along T with zero padding kt // 2, stride 1.
        spatial_bias, temporal_bias: (C,) or None.
        stride, padding: of the spatial conv, an int or a pair (>= 1 and >= 0).
        activation: None or "relu".
        backend: "auto", "reference", "cpu", "triton" or "cuda" (see ``available_backends()``).
            ``auto`` picks "cpu" for a frozen 3x3 stride-1 spatial conv of at least 64
            channels in float32/float64 on the CPU (where benchmarks show it ahead), else the
            reference.

    Returns:
        y (N, C, T, Ho, Wo) with ``z = conv2d(x_t, spatial_weight, spatial_bias)`` per frame and
        ``y = activation(z + conv_t(z) + temporal_bias)``, in x's memory format (channels_last_3d
        if x is, else contiguous). Gradients flow to x, the temporal weight and bias, and to the
        spatial weight and bias only if they require grad (a frozen spatial conv never computes
        its weight gradient).

    Raises:
        TypeError: a non-tensor or non-floating input, mixed dtypes, a non-int stride/padding.
        ValueError: wrong ranks or sizes, even kt, stride < 1, padding < 0, an empty spatial
            output, mixed devices, an unknown activation, or a backend that cannot serve x.
    """
    op = "residual_conv2plus1d"
    _validate.floating_tensor(op, "x", x, ndim=5)
    _validate.floating_tensor(op, "spatial_weight", spatial_weight, ndim=4)
    _validate.floating_tensor(op, "temporal_weight", temporal_weight, ndim=3)
    for name, bias in (("spatial_bias", spatial_bias), ("temporal_bias", temporal_bias)):
        if bias is not None:
            _validate.floating_tensor(op, name, bias, ndim=1)
    _validate.same_device_and_dtype(op, "x", x, spatial_weight=spatial_weight, temporal_weight=temporal_weight,
                                    spatial_bias=spatial_bias, temporal_bias=temporal_bias)
    stride_pair = list(_validate.int_pair(op, "stride", stride, 1))
    padding_pair = list(_validate.int_pair(op, "padding", padding, 0))
    if activation not in (None, "relu"):
        raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
    _check_shapes(x, spatial_weight, temporal_weight, spatial_bias, temporal_bias, padding_pair)
    benchmarked = not spatial_weight.requires_grad and winograd.applies(spatial_weight, stride_pair, padding_pair,
                                                                       x.dtype)
    resolved = _dispatch.resolve(SPEC if benchmarked else _REFERENCE_SPEC, backend, x.device, x.dtype)
    y, _ = residual_conv2plus1d_op(x, spatial_weight, temporal_weight, spatial_bias, temporal_bias,
                                   stride_pair, padding_pair, activation == "relu", resolved)
    return y

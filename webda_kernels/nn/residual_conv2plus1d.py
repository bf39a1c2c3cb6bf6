"""ResidualConv2Plus1d: the frozen-spatial + residual-temporal (2+1)D block as a module."""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import nn

from webda_kernels import _validate
from webda_kernels.residual_conv2plus1d import residual_conv2plus1d

_Pair = Union[int, Tuple[int, int]]


def _conv2d_padding(conv2d: nn.Conv2d) -> Tuple[int, int]:
    """``conv2d``'s padding as a pair of ints ("valid" is 0; "same" is k // 2 for odd kernels)."""
    if conv2d.padding == "valid":
        return (0, 0)
    if conv2d.padding == "same":
        if any(k % 2 == 0 for k in conv2d.kernel_size):
            raise ValueError(f"from_conv2d: padding='same' with the even kernel {conv2d.kernel_size} pads "
                             "asymmetrically; give the conv explicit padding")
        return (conv2d.kernel_size[0] // 2, conv2d.kernel_size[1] // 2)
    return tuple(conv2d.padding)


def identity_temporal_kernel(like: torch.Tensor) -> torch.Tensor:
    """The (C, C, kt) temporal kernel of the identity map (1 at [c, c, kt // 2]), like ``like``."""
    c, _, kt = like.shape
    centre = (torch.arange(kt, device=like.device) == kt // 2).to(like.dtype)
    return torch.eye(c, dtype=like.dtype, device=like.device)[:, :, None] * centre


def fold_batchnorm(conv2d: nn.Conv2d, bn: Optional[nn.BatchNorm2d]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(weight, bias) of the conv that computes ``bn(conv2d(x))`` with ``bn`` in eval mode.

    ``scale = gamma / sqrt(running_var + eps)``; ``weight = conv.weight * scale`` per output
    channel, ``bias = beta + (conv.bias - running_mean) * scale`` (computed in float64, cast
    to the conv's dtype). ``bn=None`` returns copies of the conv's own weight and bias.
    """
    weight = conv2d.weight.detach()
    bias = None if conv2d.bias is None else conv2d.bias.detach()
    if bn is None:
        return weight.clone(), None if bias is None else bias.clone()
    if not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"from_conv2d: bn must be an nn.BatchNorm2d or None, got {type(bn).__name__}")
    if bn.num_features != conv2d.out_channels:
        raise ValueError(f"from_conv2d: bn has {bn.num_features} features but conv2d has "
                         f"{conv2d.out_channels} output channels")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("from_conv2d: bn has no running statistics (track_running_stats=False); it cannot be folded")
    mean, var = bn.running_mean.detach().double(), bn.running_var.detach().double()
    gamma = torch.ones_like(mean) if bn.weight is None else bn.weight.detach().double()
    beta = torch.zeros_like(mean) if bn.bias is None else bn.bias.detach().double()
    scale = gamma / torch.sqrt(var + bn.eps)
    conv_bias = torch.zeros_like(mean) if bias is None else bias.double()
    folded_weight = weight.double() * scale[:, None, None, None]
    folded_bias = beta + (conv_bias - mean) * scale
    return folded_weight.to(weight.dtype), folded_bias.to(weight.dtype)


class ResidualConv2Plus1d(nn.Module):
    """(2+1)D block of the paper (section 3.6): a 2D conv on every frame, then a temporal conv.

    Input (N, in_channels, T, H, W), output (N, out_channels, T, Ho, Wo), Ho and Wo as for
    ``nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)``.

    - ``residual=True`` (Fig. 5b): ``z = conv2d(x_t) + spatial_bias``,
      ``y = act(z + conv_t(z) + temporal_bias)``; ``temporal_weight`` (C, C, kt) starts at zero,
      so the block starts as the 2D conv applied frame by frame.
    - ``residual=False`` (Fig. 5a, plain (2+1)D): ``y = act(conv_t(z) + temporal_bias)`` with
      ``temporal_weight`` initialised to the identity (1 at [c, c, kt // 2]). It runs the same
      fused op with ``temporal_weight - identity`` (:meth:`residual_temporal_weight`), which
      is exactly the plain conv.

    ``conv_t`` is a convolution along T with kernel ``temporal_kernel_size`` (odd), zero padding
    kt // 2, stride 1. ``bias=True`` gives the block a spatial bias (initialised as
    ``nn.Conv2d``'s) and a temporal bias (zero). ``activation``: None or "relu".
    ``freeze_spatial=True`` keeps the spatial weight and bias fixed (``requires_grad=False``):
    their gradient is never computed. ``backend``: as for ``webda_kernels.residual_conv2plus1d``.

    Raises TypeError for a non-int channel count, kernel size, stride or padding (an int or a
    pair of ints), ValueError for one out of range, an even ``temporal_kernel_size`` or an
    unknown ``activation``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Pair,
        stride: _Pair = 1,
        padding: _Pair = 0,
        temporal_kernel_size: int = 3,
        bias: bool = False,
        activation: Optional[str] = None,
        freeze_spatial: bool = True,
        residual: bool = True,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        op = "ResidualConv2Plus1d"
        self.in_channels = _validate.positive_int(op, "in_channels", in_channels)
        self.out_channels = _validate.positive_int(op, "out_channels", out_channels)
        kt = self.temporal_kernel_size = _validate.odd_size(op, "temporal_kernel_size", temporal_kernel_size)
        if activation not in (None, "relu"):
            raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
        self.kernel_size = _validate.int_pair(op, "kernel_size", kernel_size, 1)
        self.stride = _validate.int_pair(op, "stride", stride, 1)
        self.padding = _validate.int_pair(op, "padding", padding, 0)
        self.activation = activation
        self.residual = residual
        self.backend = backend
        factory = {"device": device, "dtype": dtype}

        self.spatial_weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size, **factory))
        self.spatial_bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.temporal_weight = nn.Parameter(torch.empty(out_channels, out_channels, kt, **factory))
        self.temporal_bias = nn.Parameter(torch.zeros(out_channels, **factory)) if bias else None
        self.reset_parameters()
        self.freeze_spatial = freeze_spatial

    def reset_parameters(self) -> None:
        """Spatial weight and bias as ``nn.Conv2d`` initialises them; temporal weight zero
        (residual) or identity (plain); temporal bias zero."""
        nn.init.kaiming_uniform_(self.spatial_weight, a=math.sqrt(5))
        if self.spatial_bias is not None:
            bound = 1.0 / math.sqrt(self.spatial_weight[0].numel())
            nn.init.uniform_(self.spatial_bias, -bound, bound)
        with torch.no_grad():
            w = self.temporal_weight
            w.copy_(torch.zeros_like(w) if self.residual else identity_temporal_kernel(w))
        if self.temporal_bias is not None:
            nn.init.zeros_(self.temporal_bias)

    @property
    def freeze_spatial(self) -> bool:
        """Whether the spatial weight (and bias) are fixed; setting it sets their ``requires_grad``."""
        return not self.spatial_weight.requires_grad

    @freeze_spatial.setter
    def freeze_spatial(self, frozen: bool) -> None:
        for p in (self.spatial_weight, self.spatial_bias):
            if p is not None:
                p.requires_grad_(not frozen)

    @classmethod
    def from_conv2d(
        cls,
        conv2d: nn.Conv2d,
        bn: Optional[nn.BatchNorm2d] = None,
        temporal_kernel_size: int = 3,
        freeze_spatial: bool = True,
        activation: Optional[str] = None,
        residual: bool = True,
        backend: str = "auto",
    ) -> "ResidualConv2Plus1d":
        """The block whose spatial part is ``conv2d`` followed by ``bn`` (folded in).

        ``bn`` is folded with its running statistics, i.e. as in eval mode (:func:`fold_batchnorm`),
        whatever its ``training`` flag. The block has biases when ``conv2d`` has one or ``bn``
        is given (spatial: the conv's or the folded one; temporal: zero). At initialisation the
        block computes ``bn(conv2d(x_t))`` on every frame (then ``activation``). Weights are
        copied: the block does not share storage with ``conv2d``.

        Raises:
            TypeError: ``conv2d`` is not an ``nn.Conv2d`` or ``bn`` not an ``nn.BatchNorm2d``.
            ValueError: a grouped, dilated or non-zero-padded conv, or a ``bn`` of another width.
        """
        if not isinstance(conv2d, nn.Conv2d):
            raise TypeError(f"from_conv2d: conv2d must be an nn.Conv2d, got {type(conv2d).__name__}")
        if conv2d.groups != 1 or tuple(conv2d.dilation) != (1, 1) or conv2d.padding_mode != "zeros":
            raise ValueError(f"from_conv2d: only ungrouped, undilated, zero-padded convs are supported, got groups="
                             f"{conv2d.groups}, dilation={conv2d.dilation}, padding_mode={conv2d.padding_mode!r}")
        weight, bias = fold_batchnorm(conv2d, bn)
        block = cls(
            conv2d.in_channels, conv2d.out_channels, conv2d.kernel_size, conv2d.stride, _conv2d_padding(conv2d),
            temporal_kernel_size, bias=bias is not None, activation=activation, freeze_spatial=freeze_spatial,
            residual=residual, backend=backend, device=weight.device, dtype=weight.dtype,
        )
        with torch.no_grad():
            block.spatial_weight.copy_(weight)
            if bias is not None:
                block.spatial_bias.copy_(bias)
        return block

    def residual_temporal_weight(self) -> torch.Tensor:
        """The weight of the residual form y = z + conv_t(z): ``temporal_weight`` (residual), or
        ``temporal_weight - identity`` (plain), which gives the plain block's conv_t(z)."""
        w = self.temporal_weight
        return w if self.residual else w - identity_temporal_kernel(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_conv2plus1d(
            x, self.spatial_weight, self.residual_temporal_weight(), self.spatial_bias, self.temporal_bias,
            stride=self.stride, padding=self.padding, activation=self.activation, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, temporal_kernel_size={self.temporal_kernel_size}, "
            f"bias={self.spatial_bias is not None}, activation={self.activation}, "
            f"freeze_spatial={self.freeze_spatial}, residual={self.residual}"
        )

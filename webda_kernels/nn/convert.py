"""convert_2d_to_video: a 2D CNN becomes a video model over (N, C, T, H, W) (paper section 3.6).

The conversion works module by module on a copy of the model and keeps every ``forward``
method: the tensors that flow through them become 5-D, which elementwise code (additions,
in-place ReLU, flatten after global pooling) handles unchanged. Leaf modules are mapped by
type (:data:`PER_FRAME`, :data:`SHAPE_AGNOSTIC`, the rules below); any other leaf, or a
container holding parameters of its own, is an error naming it: nothing is skipped silently.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch import nn

from webda_kernels import _validate
from webda_kernels._frames import from_frames, to_frames
from webda_kernels.nn.residual_conv2plus1d import ResidualConv2Plus1d

logger = logging.getLogger(__name__)

# Leaves applied to every frame through FrameWise (T folded into the batch).
PER_FRAME = (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
             nn.AdaptiveMaxPool2d)
# Leaves that act elementwise or on the last dimension: left as they are.
SHAPE_AGNOSTIC = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                  nn.Hardsigmoid, nn.Mish, nn.Identity, nn.Dropout, nn.Flatten, nn.Linear)


class FrameWise(nn.Module):
    """Applies a 2D ``module`` to every frame: (N, C, T, H, W) -> (N, C', T, H', W').

    T is folded into the batch by :func:`to_frames` (a view for ``channels_last_3d`` input, a
    copy otherwise) and unfolded by :func:`from_frames`, so a BatchNorm2d inside sees every
    frame of every clip, like a BatchNorm3d. ``frozen=True`` fixes the module: its parameters
    get ``requires_grad=False`` and it stays in eval mode (BatchNorm uses and keeps its running
    statistics) even when the model trains.
    """

    def __init__(self, module: nn.Module, frozen: bool = False) -> None:
        super().__init__()
        self.module = module
        self.frozen = frozen
        if frozen:
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> "FrameWise":
        super().train(mode)
        if self.frozen:
            self.module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"FrameWise({type(self.module).__name__}): input must be (N, C, T, H, W), got shape "
                             f"{tuple(x.shape)}")
        return from_frames(self.module(to_frames(x)), x.shape[0], x.shape[2])

    def extra_repr(self) -> str:
        return f"frozen={self.frozen}"


@dataclass
class VideoConversion:
    """What :func:`convert_2d_to_video` did, by module name (``named_modules`` names of the 2D model).

    ``converted``: k x k conv -> ResidualConv2Plus1d, with the name of the BatchNorm2d folded
    into it (None if none); ``per_frame``: modules wrapped in FrameWise, with why;
    ``global_pools``: AdaptiveAvgPool2d(1) -> average over T, H and W; ``kept``: shape-agnostic
    modules left as they were.
    """

    converted: Dict[str, Optional[str]] = field(default_factory=dict)
    per_frame: Dict[str, str] = field(default_factory=dict)
    global_pools: List[str] = field(default_factory=list)
    kept: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{len(self.converted)} convs -> ResidualConv2Plus1d, {len(self.per_frame)} modules per frame, "
                 f"{len(self.global_pools)} global pools over (T, H, W), {len(self.kept)} kept"]
        lines += [f"  {name}: ResidualConv2Plus1d" + (f" ({bn} folded)" if bn else "")
                  for name, bn in self.converted.items()]
        lines += [f"  {name}: per frame ({why})" for name, why in self.per_frame.items()]
        lines += [f"  {name}: average over (T, H, W)" for name in self.global_pools]
        if self.kept:
            lines.append(f"  kept as they are: {', '.join(self.kept)}")
        return "\n".join(lines)


def _converts(conv: nn.Module) -> bool:
    """Whether a Conv2d gets a temporal conv: kernel larger than 1 x 1, ungrouped, undilated, zero padding."""
    return (
        isinstance(conv, nn.Conv2d) and max(conv.kernel_size) > 1 and conv.groups == 1
        and tuple(conv.dilation) == (1, 1) and conv.padding_mode == "zeros"
    )


def _paired_batchnorm(parent: nn.Module, name: str, prefix: str) -> Optional[str]:
    """The sibling BatchNorm2d that follows conv ``name`` of ``parent``: the next child of an
    nn.Sequential, else the child named like the conv with "conv" replaced by "bn" (torchvision's
    conv1/bn1). None if there is none. Raises ValueError on a width mismatch (the shape check)."""
    children = dict(parent.named_children())
    if isinstance(parent, nn.Sequential):
        names = list(children)
        index = names.index(name)
        bn_name = names[index + 1] if index + 1 < len(names) else None
    else:
        bn_name = name.replace("conv", "bn") if "conv" in name else None
    bn = children.get(bn_name)
    if not isinstance(bn, nn.BatchNorm2d):
        return None
    if bn.num_features != children[name].out_channels:
        raise ValueError(f"convert_2d_to_video: {prefix}{bn_name} has {bn.num_features} features but {prefix}{name} "
                         f"has {children[name].out_channels} output channels; they cannot be a conv/BN pair")
    return bn_name


def _is_global_avg_pool(module: nn.Module) -> bool:
    if not isinstance(module, nn.AdaptiveAvgPool2d):
        return False
    size = module.output_size
    return (tuple(size) if isinstance(size, (list, tuple)) else (size, size)) == (1, 1)


def _check_container(module: nn.Module, path: str) -> None:
    """ValueError if ``module`` holds parameters or buffers of its own: only its forward,
    which the converter cannot see, knows what they do to the 5-D tensors."""
    own = [n for n, _ in module.named_parameters(recurse=False)] + [n for n, _ in module.named_buffers(recurse=False)]
    if own:
        raise ValueError(f"convert_2d_to_video: {path or 'the model'} ({type(module).__name__}) holds tensors of its "
                         f"own ({', '.join(own)}) used by code the converter cannot see")


def _convert_children(parent: nn.Module, prefix: str, log: VideoConversion, kt: int, freeze: bool,
                      residual: bool) -> None:
    children = dict(parent.named_children())
    pairs = {name: _paired_batchnorm(parent, name, prefix) for name, child in children.items()
             if freeze and _converts(child)}
    folded = {bn_name for bn_name in pairs.values() if bn_name is not None}
    for name, child in children.items():
        path = prefix + name
        if name in folded:
            setattr(parent, name, nn.Identity())
        elif _converts(child):
            bn_name = pairs.get(name)
            bn = None if bn_name is None else children[bn_name]
            setattr(parent, name, ResidualConv2Plus1d.from_conv2d(child, bn, kt, freeze_spatial=freeze,
                                                                  residual=residual))
            log.converted[path] = None if bn_name is None else prefix + bn_name
        elif _is_global_avg_pool(child):
            setattr(parent, name, nn.AdaptiveAvgPool3d(1))
            log.global_pools.append(path)
        elif isinstance(child, PER_FRAME):
            setattr(parent, name, FrameWise(child, frozen=freeze))
            why = type(child).__name__
            if isinstance(child, nn.Conv2d) and max(child.kernel_size) > 1:
                why += f" with groups={child.groups}, dilation={child.dilation}: no temporal conv"
                logger.warning("convert_2d_to_video: %s (%s) stays per frame", path, why)
            log.per_frame[path] = why
        elif isinstance(child, SHAPE_AGNOSTIC):
            log.kept.append(path)
        elif next(child.children(), None) is not None:
            _check_container(child, path)
            _convert_children(child, path + ".", log, kt, freeze, residual)
        else:
            raise ValueError(
                f"convert_2d_to_video: cannot convert {path} ({type(child).__name__}); supported leaves: "
                f"{', '.join(t.__name__ for t in PER_FRAME + SHAPE_AGNOSTIC)}"
            )


def convert_2d_to_video(model: nn.Module, temporal_kernel_size: int = 3, freeze_spatial: bool = True,
                        residual: bool = True) -> nn.Module:
    """A video copy of a 2D CNN: it takes (N, C, T, H, W) where ``model`` took (N, C, H, W).

    Rules, by leaf module (``model`` is deep-copied, its ``forward`` methods kept):

    - every ``nn.Conv2d`` with a kernel larger than 1 x 1 (ungrouped, undilated, zero padding)
      becomes a :class:`ResidualConv2Plus1d` with ``temporal_kernel_size`` and ``residual``
      (False: the paper's Fig. 5a plain block, identity-initialised).
    - BatchNorm: with ``freeze_spatial`` (the paper's setting) the BatchNorm2d paired with
      such a conv (the next module of an ``nn.Sequential``, or the sibling named ``bnX`` for
      ``convX``, torchvision's naming) is folded into the frozen spatial weights with its
      running statistics and replaced by ``nn.Identity``: frozen spatial filters mean frozen
      statistics. Without ``freeze_spatial`` nothing is folded and the BN acts per frame.
    - other ``PER_FRAME`` leaves (1x1, grouped or dilated convs, BatchNorm2d, GroupNorm,
      pooling) act on every frame through :class:`FrameWise`; with ``freeze_spatial`` they are
      frozen too (no gradient, eval mode).
    - ``nn.AdaptiveAvgPool2d(1)`` becomes ``nn.AdaptiveAvgPool3d(1)``: the global average over
      T, H and W before the classifier, so logits are the per-frame features averaged over T
      through the classifier.
    - ``SHAPE_AGNOSTIC`` leaves (activations, dropout, flatten, linear) are kept.

    With ``residual=True`` the video model computes, at initialisation, the 2D model on every
    frame averaged over T (before the classifier). The copy gets ``video_conversion``, a
    :class:`VideoConversion` listing every decision, also logged at INFO level.

    Raises:
        TypeError: ``model`` is not an nn.Module.
        TypeError, ValueError: a ``temporal_kernel_size`` that is not a positive odd int.
        ValueError: a leaf of another type, a container (or the model) with parameters of its
            own, or a conv/BN pair of different widths.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert_2d_to_video: model must be an nn.Module, got {type(model).__name__}")
    kt = _validate.odd_size("convert_2d_to_video", "temporal_kernel_size", temporal_kernel_size)
    if next(model.children(), None) is None:
        raise ValueError(f"convert_2d_to_video: model ({type(model).__name__}) has no submodules to convert; "
                         "wrap a single layer in an nn.Sequential")
    _check_container(model, "")
    video = copy.deepcopy(model)
    log = VideoConversion()
    _convert_children(video, "", log, kt, freeze_spatial, residual)
    video.video_conversion = log
    logger.info("convert_2d_to_video: %s", log.summary())
    return video

"""The (2+1)D video model built from a trained 2D ResNet (paper section 3.6, Figs. 4-5).

Every k x k convolution (k > 1) keeps its 2D weights as a frozen spatial filter applied to
each frame and gains a temporal convolution along T: residual and zero-initialised (Fig. 5b,
the default), or plain and identity-initialised (Fig. 5a, ``residual=False``). Everything
else acts per frame, and the embedding is averaged over time before the classifier, so at
initialisation the video model's logits equal the image model's per-frame logits averaged
over the frames.

A residual branch that answers change only (our choice; the paper is silent): by default
every temporal filter of the residual blocks sums to zero over its taps and the temporal bias
stays zero, so the branch gives (almost) nothing for a still scene. A filter with a non-zero
sum would add a fixed channel mix of the frozen spatial features to every frame, and a bias a
fixed shift, i.e. re-learn appearance from the few, noisy web videos; the spatial filters
hold the appearance the image model learned from the cleaner web images, the temporal ones
learn motion. Evidence: docs/method.md.
"""

from __future__ import annotations

import torch
from torch import nn

from webda.models.resnet import ResNet
from webda_kernels.nn import convert_2d_to_video


def to_video(net: ResNet, residual: bool = True, temporal_kernel: int = 3, freeze_spatial: bool = True,
             change_only: bool = True) -> ResNet:
    """A video copy of ``net`` taking (N, 3, T, H, W); ``net`` itself is left unchanged.

    The copy keeps :class:`ResNet`'s interface (``forward_features``, ``fc``,
    ``stage_channels``). ``freeze_spatial=False`` trains the spatial weights too (used when
    starting from scratch rather than from an image model). ``change_only`` restricts the
    residual branch to change along time (:func:`restrict_temporal_branch_to_change`); the
    plain block of the Fig. 5a ablation (``residual=False``) stays as the paper has it.
    """
    video = convert_2d_to_video(net, temporal_kernel_size=temporal_kernel,
                                freeze_spatial=freeze_spatial, residual=residual)
    if change_only and residual:
        restrict_temporal_branch_to_change(video)
    return video


def to_video_for(net: ResNet, cfg) -> ResNet:
    """:func:`to_video` of ``net`` with a stage-2 run's settings (a ``webda.config.VideoConfig``)."""
    return to_video(net, residual=cfg.residual, temporal_kernel=cfg.temporal_kernel,
                    freeze_spatial=cfg.init != "scratch", change_only=cfg.temporal_change_only)


def temporal_parameters(net: nn.Module):
    """The parameters the conversion added (temporal weights and biases), by name."""
    return [(n, p) for n, p in net.named_parameters() if n.rsplit(".", 1)[-1].startswith("temporal_")]


def _without_temporal_mean(grad: torch.Tensor) -> torch.Tensor:
    return grad - grad.mean(-1, keepdim=True)


def restrict_temporal_branch_to_change(net: nn.Module) -> None:
    """For the rest of training, keep every temporal filter of ``net`` (a model converted with
    residual blocks) summing to zero over time, and its temporal bias at zero (frozen).

    The zero-initialised weights start that way, and a gradient hook removes the mean over
    the taps of every gradient, so SGD steps, momentum and weight decay keep it so. The
    branch then gives zero for a clip whose frames are all the same, except near the clip's
    first and last frames, where the temporal zero padding looks like a change.
    """
    for name, p in temporal_parameters(net):
        if name.endswith("temporal_weight"):
            p.register_hook(_without_temporal_mean)
        else:
            p.requires_grad_(False)

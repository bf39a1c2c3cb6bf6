"""The (2+1)D video model built from a trained 2D ResNet (paper section 3.6, Figs. 4-5).

Every k x k convolution (k > 1) keeps its 2D weights as a frozen spatial filter applied to
each frame and gains a temporal convolution along T: residual and zero-initialised (Fig. 5b,
the default), or plain and identity-initialised (Fig. 5a, ``residual=False``). Everything
else acts per frame, and the embedding is averaged over time before the classifier, so at
initialisation the video model's logits equal the image model's per-frame logits averaged
over the frames.
"""

from __future__ import annotations

from torch import nn

from webda.models.resnet import ResNet
from webda_kernels.nn import convert_2d_to_video


def to_video(net: ResNet, residual: bool = True, temporal_kernel: int = 3, freeze_spatial: bool = True) -> ResNet:
    """A video copy of ``net`` taking (N, 3, T, H, W); ``net`` itself is left unchanged.

    The copy keeps :class:`ResNet`'s interface (``forward_features``, ``fc``,
    ``stage_channels``). ``freeze_spatial=False`` trains the spatial weights too (used when
    starting from scratch rather than from an image model).
    """
    return convert_2d_to_video(net, temporal_kernel_size=temporal_kernel,
                               freeze_spatial=freeze_spatial, residual=residual)


def temporal_parameters(net: nn.Module):
    """The parameters the conversion added (temporal weights and biases), by name."""
    return [(n, p) for n, p in net.named_parameters() if n.rsplit(".", 1)[-1].startswith("temporal_")]

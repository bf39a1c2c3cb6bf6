"""Drop-in ``nn.Module``s built on webda_kernels' ops, and the clip <-> frames reshape they use."""

from webda_kernels._frames import from_frames, to_frames
from webda_kernels.nn.convert import FrameWise, VideoConversion, convert_2d_to_video
from webda_kernels.nn.grad_reverse import GradientReversal, WarmStartGradientReversal, dann_coeff
from webda_kernels.nn.residual_conv2plus1d import ResidualConv2Plus1d
from webda_kernels.nn.topt_attention import TopTAttention

__all__ = [
    "FrameWise",
    "GradientReversal",
    "ResidualConv2Plus1d",
    "TopTAttention",
    "VideoConversion",
    "WarmStartGradientReversal",
    "convert_2d_to_video",
    "dann_coeff",
    "from_frames",
    "to_frames",
]

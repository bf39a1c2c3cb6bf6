"""Drop-in ``nn.Module``s built on webda_kernels' ops."""

from webda_kernels.nn.topt_attention import TopTAttention
from webda_kernels.nn.residual_conv2plus1d import ResidualConv2Plus1d
from webda_kernels.nn.convert import FrameWise, VideoConversion, convert_2d_to_video
from webda_kernels.nn.grad_reverse import GradientReversal, WarmStartGradientReversal, dann_coeff

__all__ = [
    "FrameWise",
    "GradientReversal",
    "ResidualConv2Plus1d",
    "TopTAttention",
    "VideoConversion",
    "WarmStartGradientReversal",
    "convert_2d_to_video",
    "dann_coeff",
]

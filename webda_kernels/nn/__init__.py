"""Drop-in ``nn.Module``s built on webda_kernels' ops."""

from webda_kernels.nn.gradient_reversal import GradientReversal, WarmStartGradientReversal, dann_coeff

__all__ = ["GradientReversal", "WarmStartGradientReversal", "dann_coeff"]

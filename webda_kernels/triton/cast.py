"""Casting helpers for Triton kernels that agree bit for bit on GPUs and in the interpreter.

Triton's interpreter (``TRITON_INTERPRET=1``, how CPU-only machines test the kernels)
truncates float32 -> bfloat16 by default and, with ``fp_downcast_rounding="rtne"``, rounds
ties away from zero and can drop the mantissa carry. GPUs round to nearest even. Kernels
store bfloat16 through :func:`cast_rne` so both give torch's result.
"""

import triton
import triton.language as tl


@triton.jit
def cast_rne(x, dtype: tl.constexpr):
    """``x`` (float32/float64) cast to ``dtype``, rounding to nearest even (NaN stays NaN)."""
    if dtype == tl.bfloat16:
        xf = x.to(tl.float32)
        bits = xf.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        quiet_nan = (bits >> 16) | 0x40
        out = tl.where(xf != xf, quiet_nan, rounded).to(tl.uint16)
        return out.to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)

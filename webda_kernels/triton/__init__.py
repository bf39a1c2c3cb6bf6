"""Triton kernels of webda_kernels, one module per op.

Imported lazily by the op modules, only when the Triton backend runs. Without a GPU they
run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set before import).
"""

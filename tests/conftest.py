"""Shared test setup.

Without a GPU, Triton kernels run under Triton's interpreter on CPU tensors: the variable
must be set before triton is imported, so it is set here, before any test module imports
webda_kernels. On a machine with CUDA the real Triton compiler is used.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

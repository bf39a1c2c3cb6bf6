"""webda_kernels: fused kernels for image-to-video domain adaptation.

Ops (each with ``backend="auto"|"reference"|"cpu"|"triton"|"cuda"``):
  grad_reverse          gradient reversal (identity forward, -coeff * grad backward)
  topt_scores           sum of the top-T bilinear similarities of each source row to a target batch
  topt_attention        softmax over the source batch of the top-T scores (paper 3.4)
  topk_similarity       streaming top-k of query @ weight @ bank.T per query row (values, indices)
  residual_conv2plus1d  frozen-spatial + residual-temporal (2+1)D block (paper 3.6, Fig. 5b)

``reference`` holds the pure-PyTorch oracle of every op, ``nn`` the modules,
``available_backends()`` what runs here and ``build_info()`` how the extension was built.
``use_backend(name)`` makes ``backend="auto"`` mean ``name`` within a ``with`` block (the
``WEBDA_KERNELS_BACKEND`` environment variable does so outside any block; ``environment_backend()``
checks and reads it).
``python -m webda_kernels.check`` checks every backend against the reference.
How the layers fit together and where each op's files live: docs/design.md.
"""

from __future__ import annotations

from typing import Dict, List

from webda_kernels import reference
from webda_kernels._build import build_info
from webda_kernels._dispatch import environment_backend, machine_backends, use_backend
from webda_kernels.grad_reverse import SPEC as _GRAD_REVERSE_SPEC, grad_reverse
from webda_kernels.residual_conv2plus1d import SPEC as _RESIDUAL_CONV2PLUS1D_SPEC, residual_conv2plus1d
from webda_kernels.topk_similarity import SPEC as _TOPK_SIMILARITY_SPEC, topk_similarity
from webda_kernels.topt_attention import SPEC as _TOPT_ATTENTION_SPEC, topt_attention, topt_scores

__version__ = "0.1.0"

_SPECS = [_GRAD_REVERSE_SPEC, _TOPT_ATTENTION_SPEC, _TOPK_SIMILARITY_SPEC, _RESIDUAL_CONV2PLUS1D_SPEC]


def available_backends() -> Dict[str, List[str]]:
    """``{op_name: [backend, ...]}``: the backends usable on this machine (any device, any dtype)."""
    return {spec.name: machine_backends(spec) for spec in _SPECS}


__all__ = ["available_backends", "build_info", "environment_backend", "grad_reverse", "reference", "residual_conv2plus1d", "topk_similarity",
           "topt_attention", "topt_scores", "use_backend"]

"""The checkpoint file: what a run saves and how it is read back.

A checkpoint is one ``torch.save`` file (written to a temporary name, then renamed, so a
killed run never leaves half a file) holding: the stage's name, the resolved settings, the
class names, the step, the state of the whole training model (network, attention,
discriminators, gradient-reversal schedule, target bank), optimiser, LR scheduler, AMP grad
scaler, and the RNG states of torch (CPU and CUDA), numpy and Python. Rebuilding models from
it needs the stage registry: :mod:`webda.checkpoint`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from webda.errors import UserError

FORMAT = "webda-checkpoint"
VERSION = 1


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, payload: Dict[str, Any]) -> None:
    """Write ``payload`` (plus format tag and version) atomically to ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    os.replace(tmp, path)


def read(path) -> Dict[str, Any]:
    """Load a checkpoint file; :class:`UserError` if it is missing or not a webda checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many kinds for a damaged or foreign file
        raise UserError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a webda checkpoint (written by webda train-image / train-video)")
    if ckpt["version"] != VERSION:
        raise UserError(f"{path} has checkpoint version {ckpt['version']}; this webda reads version {VERSION}")
    return ckpt


def network_state(model_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The network's tensors (``net.*``) of a training-model state dict, without the prefix."""
    return {k[len("net."):]: v for k, v in model_state.items() if k.startswith("net.")}

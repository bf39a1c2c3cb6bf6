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
import zipfile
from pathlib import Path
from typing import Any, Dict, List

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


# What every checkpoint holds besides format and version (what rebuilding a model reads).
REQUIRED = ("stage", "config", "classes", "step", "model")


def read(path) -> Dict[str, Any]:
    """Load a checkpoint file; :class:`UserError` if it is missing or not a webda checkpoint."""
    path = Path(path)
    ckpt = _load(path, "checkpoint", "is not a readable checkpoint", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a webda checkpoint (written by webda train-image / train-video)")
    if ckpt.get("version") != VERSION:
        raise UserError(f"{path} has checkpoint version {ckpt.get('version')}; this webda reads version {VERSION}")
    missing = [key for key in REQUIRED if key not in ckpt]
    if missing or not isinstance(ckpt["model"], dict):
        raise UserError(f"{path} is a damaged webda checkpoint (missing or malformed: {missing or ['model']})")
    return ckpt


def read_state_dict(path, what: str) -> Dict[str, torch.Tensor]:
    """A ``state_dict`` saved with ``torch.save`` (names to tensors), loaded with ``weights_only=True``
    (no code in the file runs); :class:`UserError` naming ``what`` and the file if it is anything else."""
    path = Path(path)
    state = _load(path, what, "is not a state_dict saved with torch.save", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UserError(f"{what} {path} is not a state_dict (a dict of named tensors) but a {type(state).__name__}")
    return state


def _load(path: Path, what: str, unreadable: str, weights_only: bool) -> Any:
    """``torch.load`` of ``path`` onto the CPU; :class:`UserError` "``what`` ``path`` does not exist" or
    "``path`` ``unreadable`` (why)"."""
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises many kinds for a damaged or foreign file
        # torch's own message may suggest weights_only=False: never for a file we cannot vouch for
        why = ("it is a webda checkpoint, whose network stage 2 reads with --init"
               if weights_only and _is_checkpoint(path) else f"torch.load: {type(err).__name__}")
        raise UserError(f"{what} {path} {unreadable} ({why})") from None


def _is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a webda checkpoint, judged from its pickle's bytes (nothing is unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            return any(FORMAT.encode() in archive.read(n) for n in pickles)
    except (OSError, zipfile.BadZipFile):
        return False


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def non_finite(state: Dict[str, Any]) -> List[str]:
    """Names of the floating-point tensors of ``state`` holding a NaN or an infinity."""
    return [name for name, t in state.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def load_state(module: torch.nn.Module, state: Dict[str, Any], source: str) -> None:
    """``module.load_state_dict(state)`` (strict); :class:`UserError` naming ``source`` if a tensor is
    missing, unexpected or of another shape (a damaged or edited checkpoint)."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserError(f"{source} does not fit the network: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in own.items():
        if isinstance(tensor, torch.Tensor) and getattr(state[name], "shape", None) != tensor.shape:
            found = tuple(state[name].shape) if isinstance(state[name], torch.Tensor) else type(state[name]).__name__
            raise UserError(f"{source}: {name!r} is {found}, the network needs {tuple(tensor.shape)}")
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as err:
        raise UserError(f"{source} does not fit the network ({_first_line(err)})") from None


def network_state(model_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The network's tensors (``net.*``) of a training-model state dict, without the prefix."""
    return {k[len("net."):]: v for k, v in model_state.items() if k.startswith("net.")}

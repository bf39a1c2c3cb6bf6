"""Training settings: dataclasses, presets, ``--config file.toml`` and command-line flags.

Precedence, lowest first: the dataclass defaults, the ``--preset`` values, the TOML file,
flags given on the command line. Every field is a flag (``lr`` -> ``--lr``; booleans get
``--x/--no-x``) and a TOML key (top level, the field's name). The resolved settings are
written as ``config.toml`` next to a run's outputs, which ``--config`` reads back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional, Type, Union

from webda.errors import UserError


@dataclass(frozen=True)
class Bounds:
    """The numbers a setting takes: ``low``/``high`` (None: no bound), inclusive unless
    ``low_open``/``high_open``. Float settings must also be finite (no nan or inf)."""

    low: Union[int, float, None] = None
    high: Union[int, float, None] = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value) -> Optional[str]:
        """What is wrong with ``value`` ("must be > 0, got nan"), or None if it is in bounds."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number {self.text()}, got {value}"
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return None if low_ok and high_ok else f"must be {self.text()}, got {value}"

    def text(self) -> str:
        """The bounds in words: ">= 0 and < 1"."""
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high}")
        return " and ".join(parts)


AT_LEAST_1 = Bounds(1)
AT_LEAST_0 = Bounds(0)
# Factors the optimiser and the losses apply to float32 tensors: float32 must hold them.
FLOAT32_MAX = 3.4028234663852886e38
FACTOR = Bounds(0, FLOAT32_MAX)
SEED_BOUNDS = Bounds(0, 2 ** 32 - 1)


def _opt(default, help: str, choices=None, bounds: Optional[Bounds] = None):
    return field(default=default, metadata={"help": help, "choices": choices, "bounds": bounds})


# Training presets: TRAIN_PRESETS[preset][stage] overrides the dataclass defaults (fields not
# named keep them). Stage 2 keeps a high learning rate (0.03; 0.01, stage 1's, at paper
# scale): the image model cannot tell a motion pair apart, so motion features and the head's
# use of them grow together from nothing, a slow start that a low rate makes longer than the
# run; the change-only temporal branch keeps such a rate stable. Evidence: docs/method.md.
TRAIN_PRESETS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "tiny": {
        "image": dict(arch="resnet-narrow16", size=32, steps=40, lr=0.05, warmup_steps=5, batch_image=16,
                      batch_frame=16, batch_target=16, chunk_span=16, checkpoint_every=20, log_every=5),
        "video": dict(size=32, steps=30, lr=0.03, warmup_steps=5, batch_video=4, batch_target=4, chunk_span=16,
                      checkpoint_every=10, log_every=5),
    },
    "small": {
        "image": dict(arch="resnet-narrow16", size=48, steps=300, batch_image=32, batch_frame=32, batch_target=32),
        "video": dict(size=48, steps=300, lr=0.03, batch_video=8, batch_target=8),
    },
    "bench": {
        "image": dict(arch="resnet-narrow16", size=48, steps=500, batch_image=32, batch_frame=32, batch_target=32),
        "video": dict(size=48, steps=200, lr=0.03, batch_video=8, batch_target=8),
    },
    "paper": {
        "image": dict(arch="resnet34", size=224, steps=20000, lr=0.01, warmup_steps=500, batch_image=32,
                      batch_frame=32, batch_target=32, workers=8, checkpoint_every=1000, eval_every=2000,
                      log_every=20),
        "video": dict(size=224, steps=20000, lr=0.01, warmup_steps=500, batch_video=10, batch_target=10, workers=8,
                      checkpoint_every=1000, eval_every=2000, log_every=20),
    },
}


@dataclass
class TrainConfig:
    """Settings shared by both stages. Each stage's class names its stage (``stage``): its key in
    :data:`TRAIN_PRESETS` and in the stage registry :data:`webda.train.stages.STAGES`."""

    stage: ClassVar[str] = ""

    data: str = _opt("", "dataset root (web_images/, web_videos/, target/)")
    out: str = _opt("", "output folder: checkpoints, metrics.jsonl, config.toml, evaluation.json")
    preset: str = _opt("small", "defaults for the run's size", list(TRAIN_PRESETS))
    arch: str = _opt("resnet-narrow16", "network (webda.models.resnet.ARCHS)")
    size: int = _opt(48, "crop side in pixels (train: random resized crop; eval: centre crop)", bounds=AT_LEAST_1)
    steps: int = _opt(300, "training steps", bounds=AT_LEAST_1)
    lr: float = _opt(0.05, "SGD learning rate (after warm-up; cosine decay to 0)",
                     bounds=Bounds(0, FLOAT32_MAX, low_open=True))
    momentum: float = _opt(0.9, "SGD momentum", bounds=Bounds(0, 1, high_open=True))
    weight_decay: float = _opt(5e-4, "SGD weight decay", bounds=FACTOR)
    warmup_steps: int = _opt(20, "linear learning-rate warm-up steps", bounds=AT_LEAST_0)
    beta: float = _opt(0.5, "weight of the domain losses (paper: 0.5)", bounds=FACTOR)
    attention: bool = _opt(True, "top-T attention weights on the web branches' loss")
    top_t: float = _opt(0.9, "T as a fraction of the target batch (paper: 0.9)", bounds=Bounds(0, 1, low_open=True))
    attention_temperature: float = _opt(0.5, "softmax temperature on the mean top-T similarity (in [-1, 1])",
                                        bounds=Bounds(1e-6, 1e6))
    bank_size: int = _opt(0, "attend against a queue of this many recent target embeddings too (0: off)",
                          bounds=AT_LEAST_0)
    attention_class_balance: bool = _opt(True, "rescale alpha within each web label so every label keeps its share "
                                               "of the batch: attention reweights items, not classes (ours; off: the "
                                               "paper's one softmax over the batch)")
    da: bool = _opt(True, "domain adaptation (multi-layer discriminators behind gradient reversal)")
    grl_max: float = _opt(0.3, "gradient-reversal coefficient the DANN schedule rises to (DANN: 1)",
                          bounds=FACTOR)
    discriminator_hidden: int = _opt(128, "units per discriminator layer", bounds=AT_LEAST_1)
    flip: bool = _opt(False, "random horizontal flips (they turn left/right and cw/ccw classes into each other)")
    chunk_span: int = _opt(24, "consecutive source frames per chunk (paper: 24)", bounds=AT_LEAST_1)
    chunk_stride: int = _opt(2, "take every n-th frame of the span (paper: 2 -> 12 frames)", bounds=AT_LEAST_1)
    batch_target: int = _opt(32, "target items per step", bounds=AT_LEAST_1)
    seed: int = _opt(0, "random seed (model, data order, augmentations)", bounds=SEED_BOUNDS)
    device: str = _opt("auto", "auto (cuda if available), cpu or cuda", ["auto", "cpu", "cuda"])
    amp: str = _opt("auto", "autocast dtype: auto (bf16 on CUDA, off on the CPU), off, bf16 or fp16 (on either device)",
                    ["auto", "off", "bf16", "fp16"])
    workers: int = _opt(1, "data-loading worker processes (0: load in the training process)", bounds=AT_LEAST_0)
    log_every: int = _opt(10, "steps between metric records", bounds=AT_LEAST_1)
    eval_every: int = _opt(0, "steps between evaluations on the target test split (0: only at the end)",
                           bounds=AT_LEAST_0)
    checkpoint_every: int = _opt(100, "steps between checkpoints (always one at the end)", bounds=AT_LEAST_1)
    kernels: str = _opt("auto", "webda_kernels backends: auto, or reference for every op", ["auto", "reference"])
    overlap_threshold: float = _opt(0.9, "web items this similar (cosine) to a target keyframe are dropped first",
                                    bounds=Bounds(-1, 1))
    cache_dir: str = _opt("", "keyframe cache and overlap report (default: DATA/.webda_cache)")
    resume: bool = _opt(False, "continue from OUT/last.pt if it exists")
    progress: bool = _opt(True, "progress bars")

    def _check_stage(self) -> None:
        """Raise :class:`UserError` for settings of this stage alone (called by :func:`validate`)."""


@dataclass
class ImageConfig(TrainConfig):
    """Stage 1: the image model (paper Fig. 3)."""

    stage: ClassVar[str] = "image"

    branches: str = _opt("IF", "labeled branches: I web images, F web video keyframes", ["I", "F", "IF"])
    batch_image: int = _opt(32, "web images per step", bounds=AT_LEAST_1)
    batch_frame: int = _opt(32, "web video keyframes per step", bounds=AT_LEAST_1)
    pretrained: str = _opt("", "torchvision ResNet state_dict file to start from (ImageNet weights)")


@dataclass
class VideoConfig(TrainConfig):
    """Stage 2: the video model (paper Fig. 4)."""

    stage: ClassVar[str] = "video"

    init: str = _opt("", "stage-1 checkpoint (image-model init), or 'scratch'")
    residual: bool = _opt(True, "residual temporal convs, zero-initialised (off: Fig. 5a, identity-initialised)")
    temporal_kernel: int = _opt(3, "temporal kernel size (odd)", bounds=AT_LEAST_1)
    temporal_change_only: bool = _opt(True, "residual temporal branch answers change only (filters sum to zero over "
                                            "time, no bias): it learns motion, not appearance (webda.models.video)")
    temporal_lr: float = _opt(1.0, "learning-rate multiplier of the temporal weights", bounds=FACTOR)
    batch_video: int = _opt(10, "web video chunks per step (paper: 10)", bounds=AT_LEAST_1)

    def _check_stage(self) -> None:
        if not self.init:
            raise UserError("--init is required: a stage-1 checkpoint (e.g. RUN/last.pt) or 'scratch'")
        if self.temporal_kernel % 2 == 0:
            raise UserError(f"temporal_kernel must be odd, got {self.temporal_kernel}")
        if self.lr * self.temporal_lr > FLOAT32_MAX:
            raise UserError(f"lr * temporal_lr (the temporal weights' learning rate) must be <= {FLOAT32_MAX}, "
                            f"got {self.lr * self.temporal_lr}")


# Fields that may differ between the run that wrote a checkpoint and the one resuming it. ``out``
# is where the checkpoint was found: a run folder may be moved, or named by another path.
RESUMABLE_CHANGES = frozenset(
    {"resume", "progress", "workers", "device", "eval_every", "log_every", "data", "cache_dir", "out"}
)
# Settings naming a file the run starts from: compared as resolved paths ("r1/last.pt" from the
# folder it was given in is the same file as its absolute path).
FILE_SETTINGS = frozenset({"init", "pretrained"})


def add_arguments(parser: argparse.ArgumentParser, cls: Type[TrainConfig]) -> None:
    """One flag per field of ``cls`` (defaults suppressed, so :func:`resolve` sees only given flags);
    a number out of the field's :class:`Bounds` is refused by the parser, naming the flag."""
    parser.add_argument("--config", metavar="FILE.toml", help="settings file (TOML, keys = the flag names with _)")
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        bounds = f.metadata["bounds"]
        limits = f"; {bounds.text()}" if bounds is not None else ""
        kwargs = dict(default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {f.default}{limits})")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            kind = _TYPES[str(f.type)]
            parser.add_argument(flag, type=kind if kind is str else flag_type(kind, bounds),
                                choices=f.metadata["choices"], **kwargs)


_TYPES = {"int": int, "float": float, "str": str}


def flag_type(kind: type, bounds: Optional[Bounds] = None):
    """An argparse ``type`` that parses a flag's text as ``kind`` (int or float) and, when given,
    checks ``bounds``: the parser then refuses bad values with one line naming the flag."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an int' if kind is int else 'a number'}, got {text!r}")
        problem = bounds.problem(value) if bounds is not None else None
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _check_bounds(f: Field, value, source: str) -> None:
    """:class:`UserError` naming ``source`` and the setting if ``value`` is out of ``f``'s bounds."""
    problem = f.metadata["bounds"].problem(value) if f.metadata["bounds"] is not None else None
    if problem:
        raise UserError(f"{source}{f.name} {problem}")


def _toml():
    """The TOML reader: the standard library's (Python >= 3.11) or tomli, its original."""
    try:
        import tomllib
    except ImportError:
        import tomli as tomllib
    return tomllib


def _read_toml(path: str) -> Dict[str, Any]:
    tomllib = _toml()
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"config file {path} is a folder; --config takes a TOML file") from None
    except OSError as err:
        raise UserError(f"config file {path} cannot be read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"config file {path} is not UTF-8 text, as TOML must be ({err.reason} at byte {err.start})"
                        ) from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"config file {path} is not valid TOML: {err}") from None


def _coerce(cls: Type[TrainConfig], values: Dict[str, Any], source: str) -> Dict[str, Any]:
    """Check names, types and choices of ``values`` against the fields of ``cls``."""
    known = {f.name: f for f in fields(cls)}
    out = {}
    for name, value in values.items():
        f = known.get(name)
        if f is None:
            raise UserError(f"{source}: unknown setting {name!r}; known: {', '.join(sorted(known))}")
        kind = _TYPES.get(str(f.type), bool)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UserError(f"{source}: {name} must be {kind.__name__}, got {value!r}")
        if f.metadata["choices"] and value not in f.metadata["choices"]:
            raise UserError(f"{source}: {name} must be one of {f.metadata['choices']}, got {value!r}")
        _check_bounds(f, value, f"{source}: ")
        out[name] = value
    return out


def from_preset(cls: Type[TrainConfig], preset: str, values: Dict[str, Any]) -> TrainConfig:
    """Settings of ``cls``'s stage: defaults < ``TRAIN_PRESETS[preset]`` < ``values``; then :func:`validate`."""
    if preset not in TRAIN_PRESETS:
        raise UserError(f"preset must be one of {sorted(TRAIN_PRESETS)}, got {preset!r}")
    return validate(cls(**{**TRAIN_PRESETS[preset][cls.stage], "preset": preset, **values}))


def resolve(cls: Type[TrainConfig], args: argparse.Namespace) -> TrainConfig:
    """Defaults < preset < ``--config`` file < flags; then :func:`validate`."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    from_file = _coerce(cls, _read_toml(args.config), args.config) if getattr(args, "config", None) else {}
    values = {**from_file, **given}
    return from_preset(cls, values.get("preset", cls.preset), values)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raise :class:`UserError` for settings that cannot work together."""
    if not cfg.data:
        raise UserError("--data is required (a dataset root, e.g. one written by `webda make-dataset`)")
    if not cfg.out:
        raise UserError("--out is required (a folder for checkpoints and metrics)")
    for f in fields(cfg):
        _check_bounds(f, getattr(cfg, f.name), "")
    cfg._check_stage()
    return cfg


def to_dict(cfg: TrainConfig) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: Type[TrainConfig], values: Dict[str, Any], source: str) -> TrainConfig:
    return cls(**_coerce(cls, values, source))


def write_toml(cfg: TrainConfig, path: Path) -> None:
    """Write the resolved settings as flat TOML (readable by ``--config``)."""
    lines = [f"# resolved settings of a webda {cfg.stage} run"]
    for name, value in to_dict(cfg).items():
        text = str(value).lower() if isinstance(value, bool) else json.dumps(value)
        lines.append(f"{name} = {text}")
    Path(path).write_text("\n".join(lines) + "\n")


def differences(a: TrainConfig, b: TrainConfig, ignore=RESUMABLE_CHANGES) -> Dict[str, tuple]:
    """``{field: (a's value, b's value)}`` for fields that differ, except ``ignore``; the files of
    :data:`FILE_SETTINGS` are compared as resolved paths."""
    da, db = to_dict(a), to_dict(b)
    return {k: (da[k], db[k]) for k in da if k not in ignore and _comparable(k, da[k]) != _comparable(k, db[k])}


def _comparable(name: str, value):
    if name in FILE_SETTINGS and value not in ("", "scratch"):
        return Path(value).resolve()
    return value


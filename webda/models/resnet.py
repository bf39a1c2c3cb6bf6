"""2D ResNets with basic blocks, state_dict-compatible with torchvision's ``resnet18``/``resnet34``.

Parameter and buffer names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer2.0.downsample.0``, ``fc``), so ImageNet weights saved from torchvision load with
:func:`load_torchvision_weights` without depending on torchvision. The forward pass only calls
submodules and adds tensors, so :func:`webda_kernels.nn.convert_2d_to_video` can swap modules
to turn the network into a video model that runs the same code on (N, C, T, H, W) input.

Narrow presets (``ARCHS``) keep the structure but use fewer channels, fewer blocks and a
small stem (3x3 conv, stride 2, no max-pool) for the generated dataset's small frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from webda.checkpoint_file import read_state_dict
from webda.errors import UserError


@dataclass(frozen=True)
class ResNetArch:
    """Depth and width of a ResNet: ``blocks`` per stage, ``width`` channels of stage 1
    (doubling per stage), ``stem`` "imagenet" (7x7/2 conv + 3x3/2 max-pool, output stride 32)
    or "small" (3x3/2 conv, no pooling, output stride 16)."""

    blocks: Tuple[int, int, int, int]
    width: int = 64
    stem: str = "imagenet"


ARCHS: Dict[str, ResNetArch] = {
    "resnet18": ResNetArch((2, 2, 2, 2)),
    "resnet34": ResNetArch((3, 4, 6, 3)),
    # CPU presets for 32-64 px frames
    "resnet-narrow16": ResNetArch((1, 1, 1, 1), width=16, stem="small"),
    "resnet-narrow32": ResNetArch((2, 2, 2, 2), width=32, stem="small"),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity (or 1x1 conv + BN) shortcut; torchvision's names."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet encoder ``E`` plus linear classifier ``C`` (``fc``).

    ``forward(x)`` -> logits (N, num_classes); :meth:`forward_features` -> (embedding (N, D),
    stage outputs) where the stage outputs feed the multi-layer domain discriminator.
    Input (N, 3, H, W); after :func:`webda_kernels.nn.convert_2d_to_video`, (N, 3, T, H, W).
    """

    def __init__(self, arch: ResNetArch, num_classes: int):
        super().__init__()
        if arch.stem not in ("imagenet", "small"):
            raise ValueError(f"stem must be 'imagenet' or 'small', got {arch.stem!r}")
        self.arch, self.num_classes = arch, num_classes
        w = arch.width
        if arch.stem == "imagenet":
            self.conv1 = nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = _conv3x3(3, w, stride=2)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        widths = [w, 2 * w, 4 * w, 8 * w]
        cin = w
        for stage, (blocks, cout) in enumerate(zip(arch.blocks, widths), start=1):
            stride = 1 if stage == 1 else 2
            layers = [BasicBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1) for b in range(blocks)]
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        self._init_weights()

    @property
    def stage_channels(self) -> List[int]:
        """Channels of the four stage outputs (the discriminator taps)."""
        return [self.arch.width * m for m in (1, 2, 4, 8)]

    @property
    def embedding_dim(self) -> int:
        return self.arch.width * 8

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each block: every residual block starts as the identity.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(embedding (N, D), [stage 1..4 outputs (N, C_l, [T,] H_l, W_l)])."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        taps = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            taps.append(x)
        return torch.flatten(self.avgpool(x), 1), taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x)[0])


def build_resnet(name: str, num_classes: int) -> ResNet:
    """The ResNet named ``name`` (a key of :data:`ARCHS`) with a ``num_classes``-way classifier."""
    if name not in ARCHS:
        raise UserError(f"unknown architecture {name!r}; choose one of {sorted(ARCHS)}")
    return ResNet(ARCHS[name], num_classes)


def load_torchvision_weights(model: ResNet, path) -> List[str]:
    """Load a torchvision ResNet ``state_dict`` saved with ``torch.save`` (ImageNet weights).

    Every tensor must exist in ``model`` with the same shape, except the classifier (``fc.*``),
    which is kept when its shape differs (a different number of classes). Returns the names
    that were not loaded. Raises :class:`UserError` for a missing file, one that is not a state_dict,
    or mismatched shapes.
    """
    path = Path(path)
    state = read_state_dict(path, "pretrained weights file")
    own = model.state_dict()
    skipped = []
    for name, tensor in state.items():
        if name not in own:
            raise UserError(f"{path}: tensor {name!r} has no counterpart in {model.arch}")
        if own[name].shape != tensor.shape:
            if name.startswith("fc."):
                skipped.append(name)
                continue
            raise UserError(f"{path}: {name!r} has shape {tuple(tensor.shape)}, "
                            f"the model expects {tuple(own[name].shape)}")
    missing = sorted(set(own) - set(state))
    if [m for m in missing if not m.startswith("fc.")]:
        raise UserError(f"{path}: missing tensors {missing[:5]}... for {model.arch}")
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return sorted(skipped + missing)


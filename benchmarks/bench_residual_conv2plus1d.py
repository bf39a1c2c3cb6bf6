"""(2+1)D block (frozen spatial conv + residual temporal conv): forward and forward+backward.

Shapes: the ResNet-34 stages on 12-frame chunks (docs/design.md, "Benchmarks"), batch 10 in
bfloat16 on a GPU, batch 2 at half the spatial size in float32 on the CPU. The block is used as
in the video model: x needs a gradient (it comes from the previous layer), the spatial weight
and bias are frozen, the temporal weight and bias train, relu follows.

Providers: "eager" is the reference in the faster of the two memory formats (contiguous or
channels_last_3d, picked by paired rounds per shape and mode; the other one is recorded as
"eager-<format>"), "compile" is torch.compile of the reference in that format, and
"webda-<backend>" the op in its own faster format (the op runs the spatial conv in x's
layout). Forward+backward rows also record the bytes autograd saves (``saved_bytes``).
"""

from __future__ import annotations

import functools

import pytest
import torch

import webda_kernels as wk
from webda_kernels import _dispatch
from webda_kernels.residual_conv2plus1d import SPEC
from webda_kernels.testing import saved_bytes

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
BATCH, FRAMES = (10, 12) if DEVICE.type == "cuda" else (2, 12)
# (channels, spatial size) of the ResNet-34 stages; the CPU takes half the size, rounded up.
STAGES = [(c, s if DEVICE.type == "cuda" else (s + 1) // 2) for c, s in [(64, 56), (128, 28), (256, 14), (512, 7)]]
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last_3d}
MODES = ("fwd", "fwd+bwd")
FORMAT_ROUNDS = 5  # paired rounds that pick a provider's faster memory format


def _setup(channels: int, size: int, memory_format):
    """Inputs of one 3x3 block (stride 1, padding 1) and the gradient of its output."""
    gen = torch.Generator().manual_seed(channels)
    shape = (BATCH, channels, FRAMES, size, size)
    x = torch.randn(shape, generator=gen).to(DEVICE, DTYPE).contiguous(memory_format=memory_format)
    scale = (9 * channels) ** -0.5
    params = dict(
        spatial_weight=(torch.randn(channels, channels, 3, 3, generator=gen) * scale).to(DEVICE, DTYPE),
        temporal_weight=(torch.randn(channels, channels, 3, generator=gen) * scale).to(DEVICE, DTYPE),
        spatial_bias=torch.randn(channels, generator=gen).to(DEVICE, DTYPE),
        temporal_bias=torch.randn(channels, generator=gen).to(DEVICE, DTYPE),
    )
    params["temporal_weight"].requires_grad_()
    params["temporal_bias"].requires_grad_()
    x.requires_grad_()
    grad = torch.randn(shape, generator=gen).to(DEVICE, DTYPE).contiguous(memory_format=memory_format)
    return x, params, grad


def _runner(fn, mode: str, x, params, grad):
    def forward():
        return fn(x, **params, stride=1, padding=1, activation="relu")

    if mode == "fwd":
        return lambda: forward()

    def forward_backward():
        x.grad = params["temporal_weight"].grad = params["temporal_bias"].grad = None
        forward().backward(grad)

    return forward_backward


def _function(provider: str):
    if provider.startswith("webda-"):
        return functools.partial(wk.residual_conv2plus1d, backend=provider[len("webda-"):])
    return _compiled_reference if provider == "compile" else wk.reference.residual_conv2plus1d


@functools.lru_cache(maxsize=None)
def _faster_format(provider: str, channels: int, size: int, mode: str, paired) -> str:
    """The memory format in which ``provider`` runs faster, by ``paired`` rounds (conftest's
    paired_speedup, as the speed-ups themselves; a best-of-5 pick flipped between runs on a noisy CPU)."""
    runs = {name: _runner(_function(provider), mode, *_setup(channels, size, memory_format))
            for name, memory_format in FORMATS.items()}
    for run in runs.values():  # warm-up: compile, autotune, caches
        run()
    speedup = paired(runs["channels_last"], runs["contiguous"], DEVICE, FORMAT_ROUNDS)
    return "channels_last" if speedup > 1 else "contiguous"


# One graph per stage shape: inductor's dynamic-shape path fails on this graph (torch 2.13).
_compiled_reference = torch.compile(wk.reference.residual_conv2plus1d, fullgraph=True, dynamic=False)
PROVIDERS = ["eager", "eager-other-format", "compile"] + [
    f"webda-{backend}" for backend in ("cpu", "triton", "cuda")
    if backend in _dispatch.serving_backends(SPEC, DEVICE, DTYPE)
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("channels,size", STAGES)
def test_bench_residual_conv2plus1d(measure, paired_speedup, channels, size, mode, provider):
    # eager and compile run in eager's faster format; a webda backend in its own faster one.
    owner = provider if provider.startswith("webda-") else "eager"
    memory_format_name = _faster_format(owner, channels, size, mode, paired_speedup)
    if provider == "eager-other-format":
        memory_format_name = next(f for f in FORMATS if f != memory_format_name)
        provider = f"eager-{memory_format_name}"
    fn = _function(provider)
    x, params, grad = _setup(channels, size, FORMATS[memory_format_name])
    info = dict(memory_format=memory_format_name)
    if mode == "fwd+bwd":
        info["saved_bytes"] = saved_bytes(lambda: fn(x, **params, stride=1, padding=1, activation="relu"))
    group = f"residual_conv2plus1d {mode} {BATCH}x{channels}x{FRAMES}x{size}x{size} {str(DTYPE)[6:]} {DEVICE.type}"
    measure(_runner(fn, mode, x, params, grad), group=group, provider=provider, device=DEVICE, **info)

"""One training step of each stage (forward, backward, SGD step) with every webda_kernels op on
``auto`` (fastest backend, provider "webda-auto") vs on its reference ("eager").

CPU: the ``small`` preset (narrow ResNet at 48 px; stage 1: 3 branches x 32 images, stage 2:
2 branches x 8 chunks of 12 frames). GPU: the paper's sizes (ResNet-34 at 224; 3 x 32 images,
2 x 10 chunks of 12 frames), bf16 autocast. Inputs are random tensors: data loading is not timed.
"""

import pytest
import torch

import webda_kernels as wk
from webda.config import PRESETS, ImageConfig, VideoConfig
from webda.models.resnet import build_resnet
from webda.models.video import to_video
from webda.train.stages import STAGES

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PRESET = "paper" if DEVICE.type == "cuda" else "small"
FRAMES = 12


def _setup(stage: str):
    cls = ImageConfig if stage == "image" else VideoConfig
    # stage 2 continues stage 1's network: same architecture
    cfg = cls(data="-", out="-", **{**PRESETS[PRESET][stage], "arch": PRESETS[PRESET]["image"]["arch"]})
    torch.manual_seed(0)
    classes = [str(k) for k in range(6)]
    net = build_resnet(cfg.arch, len(classes))
    if stage == "video":  # stage 2: frozen spatial weights, zero-initialised residual temporal convs
        net = to_video(net.eval())
    model = STAGES[stage].method(cfg, net, 1).to(DEVICE).train()
    optimizer = torch.optim.SGD(STAGES[stage].param_groups(model, cfg), lr=1e-3, momentum=0.9)
    sizes = STAGES[stage].batch_sizes(cfg)
    shape = (3, FRAMES, cfg.size, cfg.size) if stage == "video" else (3, cfg.size, cfg.size)
    inputs = {b: torch.randn(sizes[b], *shape, device=DEVICE) for b in model.branches}
    labels = {b: torch.randint(len(classes), (sizes[b],), device=DEVICE) for b in model.labeled}
    dtype = torch.bfloat16 if DEVICE.type == "cuda" else None

    def step():
        with torch.autocast(DEVICE.type, dtype=dtype, enabled=dtype is not None):
            loss = model(inputs, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return cfg, step


@pytest.mark.parametrize("provider, mode", [("eager", "reference"), ("webda-auto", "auto")])
@pytest.mark.parametrize("stage", ["image", "video"])
def test_bench_train_step(measure, stage, provider, mode):
    cfg, step = _setup(stage)

    def run():
        with wk.use_backend(mode):
            step()

    dtype = "bf16-autocast" if DEVICE.type == "cuda" else "float32"
    measure(run, group=f"train_step {stage} {PRESET} {cfg.arch} {cfg.size}px {dtype}", provider=provider,
            device=DEVICE, stage=stage, preset=PRESET)

"""One training step of each stage (forward, backward, SGD step) with every webda_kernels op on
``auto`` (fastest backend, provider "webda-auto") vs on its reference ("eager").

CPU: the ``small`` preset (narrow ResNet at 48 px; stage 1: 3 branches x 32 images, stage 2:
2 branches x 8 chunks of 12 frames). GPU: the paper's sizes (ResNet-34 at 224; 3 x 32 images,
2 x 10 chunks of 12 frames), bf16 autocast. Inputs are random tensors: data loading is not timed.
"""

import pytest
import torch

import webda_kernels as wk
from webda.config import TRAIN_PRESETS
from webda.train.optimizer import param_groups
from webda.train.stages import STAGES

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PRESET = "paper" if DEVICE.type == "cuda" else "small"
FRAMES = 12


def _setup(name: str):
    stage = STAGES[name]
    # stage 2 continues stage 1's network: same architecture; its spatial weights frozen, its residual
    # temporal convs zero-initialised, as from a stage-1 checkpoint
    cfg = stage.settings(PRESET, data="-", out="-", init="-", arch=TRAIN_PRESETS[PRESET]["image"]["arch"]) \
        if stage.video_model else stage.settings(PRESET, data="-", out="-")
    torch.manual_seed(0)
    classes = [str(k) for k in range(6)]
    model = stage.method(cfg, stage.network(cfg, len(classes)), 1).to(DEVICE).train()
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=1e-3, momentum=0.9)
    sizes = stage.batch_sizes(cfg)
    shape = (3, FRAMES, cfg.size, cfg.size) if stage.video_model else (3, cfg.size, cfg.size)
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

"""Mixed precision (``--amp``): the trainer's autocast path runs on the CPU too, through both stages,
with every webda_kernels op taking the dtypes autocast hands it; ``--amp`` says what it does
(the setup record) or refuses (one line, exit 2) instead of being ignored."""

import json
import math
import warnings
from collections import defaultdict

import pytest
import torch

from conftest import tiny_train_flags
from webda.checkpoint import read
from webda.cli import main
from webda.errors import UserError
from webda.train import engine
from webda.train.stages import STAGES
from webda_kernels import _dispatch


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_both_stages_train_under_cpu_bfloat16_autocast(tiny_dataset, tiny_train_cache, tmp_path, monkeypatch):
    seen = defaultdict(set)  # op -> the dtypes a training step asked it to run on
    resolve, step, stepping = _dispatch.resolve, engine._step, []

    def spy(spec, backend, device, dtype):
        if stepping:
            seen[spec.name].add(dtype)
        return resolve(spec, backend, device, dtype)

    def spied_step(*args):
        stepping.append(True)
        try:
            return step(*args)
        finally:
            stepping.pop()

    monkeypatch.setattr(_dispatch, "resolve", spy)
    monkeypatch.setattr(engine, "_step", spied_step)
    image, video = tmp_path / "image", tmp_path / "video"
    amp = ["--amp", "bf16", "--device", "cpu", "--steps", "3", "--log-every", "1"]
    assert main(["train-image", *tiny_train_flags(tiny_dataset, image, tiny_train_cache), *amp,
                 "--batch-image", "8", "--batch-frame", "8"]) == 0
    image_ops = {op: set(dtypes) for op, dtypes in seen.items()}
    seen.clear()
    assert main(["train-video", *tiny_train_flags(tiny_dataset, video, tiny_train_cache), *amp,
                 "--init", str(image / "last.pt"), "--batch-video", "2", "--batch-target", "4"]) == 0

    # Autocast hands the (2+1)D blocks bfloat16 activations; the model gives the gradient
    # reversal (pooled discriminator taps) and the attention (normalised embeddings) float32.
    assert image_ops == {"grad_reverse": {torch.float32}, "topt_attention": {torch.float32}}
    assert seen == {"grad_reverse": {torch.float32}, "topt_attention": {torch.float32},
                    "residual_conv2plus1d": {torch.bfloat16}}
    for out in (image, video):
        records = _records(out)
        assert records[0]["kind"] == "setup" and records[0]["autocast"] == "bfloat16"
        losses = [r["loss"] for r in records if r["kind"] == "train"]
        assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
        state = read(out / "last.pt")["model"]
        floating = [t for t in state.values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
        assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in floating)  # master weights


def _cfg(amp):
    return STAGES["image"].settings("tiny", data="-", out="-", amp=amp)


def test_amp_resolves_per_device_and_refuses_what_torch_cannot_autocast(monkeypatch):
    cpu = torch.device("cpu")
    assert [engine._autocast_dtype(_cfg(a), cpu) for a in ("auto", "off", "bf16", "fp16")] == [
        None, None, torch.bfloat16, torch.float16]

    class Refusing:  # what torch.autocast does for a dtype the device cannot autocast to
        def __init__(self, device_type, dtype=None, enabled=True):
            warnings.warn("In CPU autocast, but the target dtype is not supported. Disabling autocast.")

    monkeypatch.setattr(torch, "autocast", Refusing)
    with pytest.raises(UserError, match="--amp fp16 cannot apply on cpu: In CPU autocast"):
        engine._autocast_dtype(_cfg("fp16"), cpu)
    assert engine._autocast_dtype(_cfg("auto"), cpu) is None  # auto never asks for it on the CPU

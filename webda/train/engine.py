"""The training loop shared by both stages.

One step: load the step's batches (:mod:`webda.train.sampling`), one forward pass of the
training model over every branch, one backward pass through gradient reversal, an SGD step
(momentum, weight decay, warm-up + cosine LR), one tick of the DANN schedule. Around it:
AMP on CUDA, DDP under torchrun (rank 0 logs, evaluates and saves), metrics as JSON lines,
a progress bar, periodic evaluation on the target test split, checkpoints every N steps and
at the end, and ``--resume`` from ``OUT/last.pt``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from webda import checkpoint, distributed
from webda.config import TrainConfig, differences, stage_of, to_dict, write_toml
from webda.errors import UserError
from webda.evaluate import accuracy_report, predict_videos
from webda.train.sampling import BranchSampler, StepBatches
from webda.train.stages import Stage

CHECKPOINT = "last.pt"
METRICS = "metrics.jsonl"
KERNELS_ENV = "WEBDA_KERNELS_BACKEND"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


@contextlib.contextmanager
def kernels(mode: str):
    """Within the block, ``reference`` runs every webda_kernels op as its pure-PyTorch
    reference and ``auto`` as its fastest backend (``WEBDA_KERNELS_BACKEND``, restored after)."""
    before = os.environ.get(KERNELS_ENV)
    os.environ[KERNELS_ENV] = mode
    try:
        yield
    finally:
        if before is None:
            del os.environ[KERNELS_ENV]
        else:
            os.environ[KERNELS_ENV] = before


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, each with ``kind`` and ``step``."""

    def __init__(self, path: Path, enabled: bool, resume_step: Optional[int]):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.is_file():
            # Drop records of steps after the checkpoint: the resumed run writes them again.
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        elif enabled:
            path.write_text("")

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


def _autocast_dtype(cfg: TrainConfig, device: torch.device):
    if device.type != "cuda" or cfg.amp == "off":
        return None
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16


def _resume_state(cfg: TrainConfig, out: Path) -> Optional[dict]:
    path = out / CHECKPOINT
    if not path.is_file():
        return None
    if not cfg.resume:
        raise UserError(f"{out} already holds a run ({path}); pass --resume to continue it or choose another --out")
    ckpt = checkpoint.read(path)
    if ckpt["stage"] != stage_of(type(cfg)):
        raise UserError(f"{path} is a {ckpt['stage']}-stage checkpoint; it cannot resume a {stage_of(type(cfg))} run")
    changed = differences(checkpoint.config_of(ckpt, path), cfg)
    if changed:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        raise UserError(f"--resume with different settings than {path} was trained with ({listed})")
    return ckpt


def train(cfg: TrainConfig, stage: Stage) -> dict:
    """Run (or resume) one stage; returns the final evaluation report (on every rank)."""
    device = distributed.init(pick_device(cfg.device).type)
    try:
        with kernels(cfg.kernels):
            return _train(cfg, stage, device)
    finally:
        distributed.shutdown()


def _train(cfg: TrainConfig, stage: Stage, device: torch.device) -> dict:
    main, rank, world = distributed.is_main(), distributed.rank(), distributed.world_size()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    resume = _resume_state(cfg, out)
    if main:
        write_toml(cfg, out / "config.toml")

    if not main:  # rank 0 fills the keyframe cache first
        distributed.barrier()
    data = stage.data(cfg)
    if main:
        distributed.barrier()
    classes = list(data.prepared.classes)
    torch.manual_seed(cfg.seed)
    model = stage.method(cfg, stage.network(cfg, classes), world).to(device)
    groups = stage.param_groups(model, cfg)
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))
    autocast_dtype = _autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        checkpoint.set_rng_state(resume["rng"])
        start = resume["step"]
    ddp = DistributedDataParallel(model) if world > 1 else model

    sizes = stage.batch_sizes(cfg)
    branches = {
        name: (dataset, BranchSampler(len(dataset), sizes[name], cfg.seed, rank, world))
        for name, dataset in data.branches.items()
        if name in model.branches
    }
    loader = DataLoader(StepBatches(branches, cfg.seed, rank), batch_size=None, sampler=range(start, cfg.steps),
                        num_workers=cfg.workers, pin_memory=device.type == "cuda")
    log = MetricsLog(out / METRICS, main, start if resume is not None else None)
    if main and resume is None:
        dropped = [r["path"] for r in data.prepared.overlap_report["dropped"]]
        log.write({"kind": "setup", "step": 0, "classes": classes, "world_size": world,
                   "branches": {b: len(d) for b, (d, _) in branches.items()}, "overlap_dropped": dropped})

    def evaluate(step: int) -> dict:
        probs, labels = predict_videos(model.net, data.evaluation, stage.video_model, device,
                                       autocast_dtype=autocast_dtype, progress=False)
        report = {"kind": "eval", "step": step, **accuracy_report(probs, labels, classes)}
        log.write(report)
        return report

    def save(step: int) -> None:
        if main:
            checkpoint.save(out / CHECKPOINT, {
                "stage": stage_of(type(cfg)), "config": to_dict(cfg), "classes": classes, "step": step,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": checkpoint.rng_state(),
            })
        distributed.barrier()

    sums: Dict[str, float] = defaultdict(float)
    count, tic = 0, time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=start, desc=f"train-{stage_of(type(cfg))}", unit="step",
               disable=not (main and cfg.progress))
    model.train()
    step = start
    for batch in loader:
        inputs = {b: x.to(device, non_blocking=True) for b, (x, _, _) in batch.items()}
        labels = {b: y.to(device, non_blocking=True) for b, (_, y, _) in batch.items() if b in model.labeled}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            terms = ddp(inputs, labels)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise UserError(f"training diverged: the loss is {loss.item()} at step {step}; lower --lr "
                            f"(or --temporal-lr in stage 2) or check the data")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if model.grl is not None:
            model.grl.step()
        step += 1

        for key, value in terms.items():
            if value.ndim == 0:
                sums[key] += float(value.detach())
            else:  # attention weights: how peaked (1 = uniform)
                sums[f"alpha_max_x_n/{key.split('/')[1]}"] += float(value.max() * value.numel())
        count += 1
        acc = sum(sums[f"acc/{b}"] for b in model.labeled) / (count * len(model.labeled))
        bar.set_postfix(loss=f"{sums['loss'] / count:.3f}", acc=f"{acc:.2f}", refresh=False)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            record = {"kind": "train", "step": step, "lr": scheduler.get_last_lr()[0],
                      "grl_coeff": model.grl.coeff if model.grl is not None else 0.0,
                      "seconds_per_step": (time.perf_counter() - tic) / count,
                      **{k: v / count for k, v in sums.items()}}
            log.write(record)
            sums.clear()
            count, tic = 0, time.perf_counter()
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps and main:
            report = evaluate(step)
            bar.write(f"step {step}: target top-1 {report['top1']:.3f}")
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save(step)
    bar.close()
    save(step)
    report = evaluate(step) if main else {}
    distributed.barrier()
    if main:
        (out / "evaluation-test.json").write_text(json.dumps(report, indent=1))
        print(f"{stage_of(type(cfg))} model, step {step}: target test top-1 {report['top1']:.3f}; outputs in {out}")
    return report

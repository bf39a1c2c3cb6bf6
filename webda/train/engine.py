"""The training loop shared by both stages.

One step: load the step's batches (:mod:`webda.train.sampling`), one forward pass of the
training model over every branch, one backward pass through gradient reversal, an SGD step
(:mod:`webda.train.optimizer`), one tick of the DANN schedule. Around it: AMP on CUDA, DDP
under torchrun (rank 0 logs, evaluates and saves), metrics as JSON lines
(:mod:`webda.train.metrics`), a progress bar, periodic evaluation on the target test split,
checkpoints every N steps and at the end, and ``--resume`` from ``OUT/last.pt``.

:func:`train` reads as its three parts: :func:`_set_up` (data, model, optimiser, resume,
loader), :func:`_loop` (the steps) and :meth:`_Run.finish` (last checkpoint and evaluation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import webda_kernels
from webda import checkpoint, distributed
from webda.config import TrainConfig, differences, to_dict, write_toml
from webda.distributed import pick_device
from webda.errors import UserError
from webda.evaluate import accuracy_report, predict_videos
from webda.models.method import WebDAModel
from webda.paths import output_folder
from webda.train.data import StageData
from webda.train.metrics import MetricsLog, RunningMetrics
from webda.train.optimizer import build_optimizer
from webda.train.sampling import BranchSampler, StepBatches
from webda.train.stages import STAGES, Stage

CHECKPOINT = "last.pt"
METRICS = "metrics.jsonl"
_DIVERGED_HINT = "lower --lr (or --temporal-lr in stage 2) or check the data"


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) the stage that ``cfg`` configures; returns the final evaluation report
    (on rank 0; ``{}`` on the other ranks)."""
    device = distributed.init(pick_device(cfg.device).type)
    try:
        with webda_kernels.use_backend(cfg.kernels):
            run = _set_up(cfg, STAGES[cfg.stage], device)
            return run.finish(_loop(run))
    finally:
        distributed.shutdown()


@dataclass
class _Run:
    """A stage's run, set up: what its steps, evaluations and checkpoints use."""

    cfg: TrainConfig
    stage: Stage
    device: torch.device
    out: Path
    main: bool
    data: StageData
    classes: list
    model: WebDAModel
    ddp: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast_dtype: Optional[torch.dtype]
    start: int
    loader: DataLoader
    log: MetricsLog

    def evaluate(self, step: int) -> dict:
        """Top-1 etc. on the target test split, logged as an ``eval`` record (rank 0 only)."""
        probs, labels = predict_videos(self.model.net, self.data.evaluation, self.stage.video_model, self.device,
                                       autocast_dtype=self.autocast_dtype, progress=False)
        report = {"kind": "eval", "step": step, **accuracy_report(probs, labels, self.classes)}
        self.log.write(report)
        return report

    def save(self, step: int) -> None:
        """``OUT/last.pt`` (rank 0), then every rank waits for it. :class:`UserError` instead if a
        weight is not finite: the last update diverged, and a checkpoint of it would be trusted by
        ``--resume`` and ``webda evaluate`` (every rank holds the same weights, so all raise)."""
        bad = checkpoint.non_finite(self.model.state_dict())
        if bad:
            raise UserError(f"training diverged: after step {step} {len(bad)} weight tensors are not finite "
                            f"(e.g. {bad[0]!r}), so no checkpoint was written; {_DIVERGED_HINT}")
        if self.main:
            checkpoint.save(self.out / CHECKPOINT, {
                "stage": self.stage.name, "config": to_dict(self.cfg), "classes": self.classes, "step": step,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": checkpoint.rng_state(),
            })
        distributed.barrier()

    def finish(self, step: int) -> dict:
        """The last checkpoint and evaluation (``OUT/evaluation-test.json``)."""
        self.save(step)
        report = self.evaluate(step) if self.main else {}
        distributed.barrier()
        if self.main:
            (self.out / "evaluation-test.json").write_text(json.dumps(report, indent=1))
            print(f"{self.stage.name} model, step {step}: target test top-1 {report['top1']:.3f}; "
                  f"outputs in {self.out}")
        return report


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16


def _resume_state(cfg: TrainConfig, out: Path) -> Optional[dict]:
    """The checkpoint in ``out`` to continue (None for a new run); :class:`UserError` if there is
    one but ``--resume`` was not asked for, or its settings differ."""
    path = out / CHECKPOINT
    if not path.is_file():
        return None
    if not cfg.resume:
        raise UserError(f"{out} already holds a run ({path}); pass --resume to continue it or choose another --out")
    ckpt = checkpoint.read(path)
    if ckpt["stage"] != cfg.stage:
        raise UserError(f"{path} is a {ckpt['stage']}-stage checkpoint; it cannot resume a {cfg.stage} run")
    changed = differences(checkpoint.config_of(ckpt, path), cfg)
    if changed:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        raise UserError(f"--resume with different settings than {path} was trained with ({listed})")
    return ckpt


def _set_up(cfg: TrainConfig, stage: Stage, device: torch.device) -> _Run:
    """Data, training model, optimiser and loader of a run; a resumed run continues the state of
    ``OUT/last.pt`` (model, optimiser, schedules, RNGs; the loader starts at its step)."""
    main, rank, world = distributed.is_main(), distributed.rank(), distributed.world_size()
    out = output_folder(cfg.out, "--out")
    if cfg.cache_dir:
        output_folder(cfg.cache_dir, "--cache-dir")
    resume = _resume_state(cfg, out)
    if main:
        write_toml(cfg, out / "config.toml")

    if not main:  # rank 0 fills the keyframe cache first
        distributed.barrier()
    data = stage.data(cfg)
    if main:
        distributed.barrier()
    _check_chunk_span(cfg, data)
    classes = list(data.prepared.classes)
    torch.manual_seed(cfg.seed)
    model = stage.method(cfg, stage.start_network(cfg, classes), world).to(device)
    optimizer, scheduler = build_optimizer(model, cfg)
    autocast_dtype = _autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    start = 0
    if resume is not None:
        checkpoint.load_state(model, resume["model"], str(out / CHECKPOINT))
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
    return _Run(cfg=cfg, stage=stage, device=device, out=out, main=main, data=data, classes=classes, model=model,
                ddp=ddp, optimizer=optimizer, scheduler=scheduler, scaler=scaler, autocast_dtype=autocast_dtype,
                start=start, loader=loader, log=log)


def _check_chunk_span(cfg: TrainConfig, data: StageData) -> None:
    """:class:`UserError` if a chunk spans more frames than the longest video of the data holds:
    shorter videos are looped to fill a chunk, so such a span only repeats frames, at a memory
    cost that grows with it."""
    layout = data.prepared.layout
    longest = max((v.info.num_frames for v in layout.web_videos + layout.target_videos()), default=0)
    if longest and cfg.chunk_span > longest:
        raise UserError(f"--chunk-span {cfg.chunk_span} is longer than the longest video in {cfg.data} "
                        f"({longest} frames); use at most {longest}")


def _step(run: _Run, batch: dict, step: int) -> dict:
    """One optimisation step on ``batch`` (the batches of step ``step``, counted from 0); returns
    the training model's terms."""
    model, device = run.model, run.device
    inputs = {b: x.to(device, non_blocking=True) for b, (x, _, _) in batch.items()}
    labels = {b: y.to(device, non_blocking=True) for b, (_, y, _) in batch.items() if b in model.labeled}
    with torch.autocast(device.type, dtype=run.autocast_dtype, enabled=run.autocast_dtype is not None):
        terms = run.ddp(inputs, labels)
    loss = terms["loss"]
    if not torch.isfinite(loss):
        raise UserError(f"training diverged: the loss is {loss.item()} at step {step}; {_DIVERGED_HINT}")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if model.grl is not None:
        model.grl.step()
    return terms


def _loop(run: _Run) -> int:
    """Train from ``run.start`` to ``cfg.steps``, with the metric records, evaluations and
    checkpoints due on the way; returns the last step."""
    cfg, model = run.cfg, run.model
    metrics = RunningMetrics(model.labeled)
    bar = tqdm(total=cfg.steps, initial=run.start, desc=f"train-{run.stage.name}", unit="step",
               disable=not (run.main and cfg.progress))
    model.train()
    step = run.start
    for batch in run.loader:
        metrics.add(_step(run, batch, step))
        step += 1
        bar.set_postfix(**metrics.progress(), refresh=False)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log.write(metrics.record(step, lr=run.scheduler.get_last_lr()[0],
                                         grl_coeff=model.grl.coeff if model.grl is not None else 0.0))
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps and run.main:
            report = run.evaluate(step)
            bar.write(f"step {step}: target top-1 {report['top1']:.3f}")
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            run.save(step)
    bar.close()
    return step

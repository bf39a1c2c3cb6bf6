"""``torchrun --nproc_per_node=2 -m webda train-video`` on CPU (gloo)."""

import json
import os
import subprocess
import sys

from conftest import tiny_train_flags


def test_train_torchrun_two_processes_on_cpu(tiny_dataset, tiny_train_cache, tiny_image_run, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "webda",
               "train-video", *tiny_train_flags(tiny_dataset, out, tiny_train_cache),
               "--init", str(tiny_image_run / "last.pt"), "--steps", "2", "--batch-video", "2", "--batch-target", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == ["last.pt"]  # rank 0 saves, once
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["world_size"] == 2
    assert sum(r["kind"] == "eval" for r in records) == 1  # rank 0 logs and evaluates

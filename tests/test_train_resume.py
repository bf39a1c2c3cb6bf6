"""A run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from conftest import tiny_train_flags
from webda.checkpoint import read

STEPS = 12


def _command(data, cache, out, workers):
    flags = tiny_train_flags(data, out, cache)
    flags[flags.index("--workers") + 1] = str(workers)
    return [sys.executable, "-m", "webda", "train-image", *flags, "--steps", str(STEPS), "--checkpoint-every", "4",
            "--log-every", "4", "--batch-image", "8", "--batch-frame", "8"]


def _train_records(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("seconds_per_step", None)
    return records


def test_train_resume_after_sigkill_matches_uninterrupted_run(tiny_dataset, tiny_train_cache, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_command(tiny_dataset, tiny_train_cache, whole, workers=0), check=True, capture_output=True)

    # a different number of loader workers on purpose: batches depend on the step only
    proc = subprocess.Popen(_command(tiny_dataset, tiny_train_cache, killed, workers=1),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (killed / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert read(killed / "last.pt")["step"] < STEPS

    resumed = subprocess.run(_command(tiny_dataset, tiny_train_cache, killed, workers=0) + ["--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a, b = read(whole / "last.pt"), read(killed / "last.pt")
    assert a["step"] == b["step"] == STEPS
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():  # tensors, and the schedule's extra state
        assert torch.equal(value, b["model"][key]) if torch.is_tensor(value) else value == b["model"][key], key
    assert json.loads((whole / "evaluation-test.json").read_text()) == json.loads(
        (killed / "evaluation-test.json").read_text())
    assert _train_records(whole) == _train_records(killed)

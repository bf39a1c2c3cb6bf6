"""Bad input to the ``webda`` command line (issue 17), each case run as a subprocess: exit
status 2, one line on stderr naming the flag or file, no traceback, and nothing written that a
rerun would trust. Cases with a documented meaning instead exit 0.

Every case runs in its own folder, with its own copies of the tiny generated dataset, its
keyframe cache and a 6-step stage-1 run where it names them, damaged as the case says (a
``damage`` function); the damaged files the cases name (configs, checkpoints, state dicts) are
written once. Rows for the data layer (corrupt media, a damaged cache index...) are added to
CASES the same way. The cases run concurrently, once per test session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import pytest
import torch

import webda
from conftest import tiny_train_flags

TIMEOUT_S = 300


@dataclass(frozen=True)
class Case:
    """``webda *argv`` in the case's folder. ``argv`` may name ``{data}`` (a copy of the dataset),
    ``{cache}`` (of its keyframe cache), ``{run}`` (of a 6-step stage-1 run folder) and
    ``{files}``, the folder of :func:`_damaged_files`; ``damage(folder)`` edits the copies first.
    ``word``: what the error line must contain (None for an accepted case, which must exit 0).
    ``absent``: paths (relative to the case's folder) that must not exist afterwards."""

    id: str
    argv: Sequence[str]
    word: Optional[str]
    damage: Optional[Callable[[Path], None]] = None
    env: Tuple[Tuple[str, str], ...] = ()
    absent: Sequence[str] = ()


TRAIN = ("--data", "{data}", "--cache-dir", "{cache}", "--preset", "tiny", "--size", "32", "--batch-target", "8",
         "--workers", "0", "--no-progress", "--out", "out")
IMAGE = ("train-image", *TRAIN)
VIDEO = ("train-video", *TRAIN)
EVALUATE = ("evaluate", "--data", "{data}", "--no-progress", "--checkpoint")
# The run fixture's own flags: a resumed run must repeat them.
RUN_FLAGS = ("--steps", "6", "--batch-image", "8", "--batch-frame", "8")
NO_RUN = ("out/last.pt", "out/evaluation-test.json")


def _remove_test_split(folder: Path) -> None:
    shutil.rmtree(folder / "data" / "target" / "test")


CASES = [
    # flags, where they are parsed
    Case("momentum nan (issue repro)", (*IMAGE, "--momentum", "nan", "--steps", "2"), "--momentum", absent=NO_RUN),
    Case("momentum 1", (*IMAGE, "--momentum", "1"), "--momentum"),
    Case("lr nan", (*IMAGE, "--lr", "nan"), "--lr"),
    Case("lr beyond float32", (*IMAGE, "--lr", "1e308"), "--lr"),
    Case("lr not a number", (*IMAGE, "--lr", "fast"), "--lr"),
    Case("beta nan", (*IMAGE, "--beta", "nan"), "--beta"),
    Case("weight-decay nan", (*IMAGE, "--weight-decay", "nan"), "--weight-decay"),
    Case("temporal-lr -1", (*VIDEO, "--init", "scratch", "--temporal-lr", "-1"), "--temporal-lr"),
    Case("attention-temperature nan", (*IMAGE, "--attention-temperature", "nan"), "--attention-temperature"),
    Case("grl-max inf", (*IMAGE, "--grl-max", "inf"), "--grl-max"),
    Case("seed -1", (*IMAGE, "--seed", "-1"), "--seed"),
    Case("steps 0", (*IMAGE, "--steps", "0"), "--steps"),
    Case("top-t 0", (*IMAGE, "--top-t", "0"), "--top-t"),
    Case("chunk-span beyond the longest video", (*IMAGE, "--chunk-span", "100000"), "--chunk-span", absent=NO_RUN),
    Case("demo seed -1", ("demo", "--out", "demo", "--seed", "-1"), "--seed", absent=("demo",)),
    # settings files
    Case("config lr = nan", (*IMAGE, "--config", "{files}/nan.toml"), "lr must be a finite number"),
    Case("config momentum = inf", (*IMAGE, "--config", "{files}/inf.toml"), "momentum"),
    Case("config not UTF-8", (*IMAGE, "--config", "{files}/latin1.toml"), "UTF-8"),
    Case("config a folder", (*IMAGE, "--config", "{data}"), "folder"),
    # output paths naming a file (or a folder where a file is written)
    Case("train --out a file", ("train-image", *TRAIN[:-1], "{files}/a_file"), "--out"),
    Case("train --cache-dir a file", (*IMAGE[:4], "{files}/a_file", *IMAGE[5:]), "--cache-dir", absent=NO_RUN),
    Case("evaluate --out a folder", (*EVALUATE, "{run}/last.pt", "--out", "{data}"), "--out"),
    Case("evaluate --out under a file", (*EVALUATE, "{run}/last.pt", "--out", "{files}/a_file/e.json"), "--out"),
    Case("demo --out a file", ("demo", "--out", "{files}/a_file", "--no-progress"), "--out"),
    Case("make-dataset --out a file", ("make-dataset", "--out", "{files}/a_file", "--preset", "tiny"), "a_file"),
    Case("prepare-data --cache a file", ("prepare-data", "{data}", "--cache", "{files}/a_file", "--no-progress"),
         "a_file"),
    # checkpoints and weights
    Case("init with a tampered shape", (*VIDEO, "--init", "{files}/shape.pt"), "shape.pt", absent=NO_RUN),
    Case("init of random bytes", (*VIDEO, "--init", "{files}/random.bin"), "random.bin", absent=NO_RUN),
    Case("init with non-finite weights", (*VIDEO, "--init", "{files}/nan.pt"), "non-finite", absent=NO_RUN),
    Case("pretrained of random bytes", (*IMAGE, "--pretrained", "{files}/random.bin"), "random.bin", absent=NO_RUN),
    Case("pretrained a webda checkpoint", (*IMAGE, "--pretrained", "{run}/last.pt"), "webda checkpoint",
         absent=NO_RUN),
    Case("evaluate non-finite weights", (*EVALUATE, "{files}/nan.pt", "--out", "e.json"), "non-finite",
         absent=("e.json",)),
    Case("evaluate tampered shape", (*EVALUATE, "{files}/shape.pt", "--out", "e.json"), "shape.pt",
         absent=("e.json",)),
    Case("evaluate damaged checkpoint", (*EVALUATE, "{files}/keyless.pt", "--out", "e.json"), "damaged",
         absent=("e.json",)),
    Case("evaluate batch-size 0", (*EVALUATE, "{run}/last.pt", "--batch-size", "0"), "--batch-size"),
    Case("evaluate workers -1", (*EVALUATE, "{run}/last.pt", "--workers", "-1"), "--workers"),
    Case("run folder without --resume", (*IMAGE[:-1], "{run}", *RUN_FLAGS), "--resume"),
    # the environment and the dataset
    Case("WEBDA_KERNELS_BACKEND=junk (train)", IMAGE, "WEBDA_KERNELS_BACKEND",
         env=(("WEBDA_KERNELS_BACKEND", "junk"),), absent=NO_RUN),
    Case("WEBDA_KERNELS_BACKEND=junk (evaluate)", (*EVALUATE, "{run}/last.pt"), "WEBDA_KERNELS_BACKEND",
         env=(("WEBDA_KERNELS_BACKEND", "junk"),)),
    Case("dataset root a file", ("train-image", "--data", "{files}/a_file", *TRAIN[2:]), "a_file"),
    Case("dataset without target/test", (*EVALUATE, "{run}/last.pt"), "test", damage=_remove_test_split),
    # accepted, with a documented meaning
    Case("resume a moved run folder, named by a relative path", (*IMAGE[:-1], "run", *RUN_FLAGS, "--resume"),
         None),
    Case("WEBDA_KERNELS_BACKEND=reference under --kernels auto", (*IMAGE, "--steps", "1"), None,
         env=(("WEBDA_KERNELS_BACKEND", "reference"),)),
]


def _damaged_files(folder: Path, checkpoint: Path) -> None:
    """The bad files the cases name, written into ``folder`` from a good ``checkpoint``."""
    (folder / "a_file").write_text("not a folder\n")
    (folder / "nan.toml").write_text("lr = nan\n")
    (folder / "inf.toml").write_text("momentum = inf\n")
    (folder / "latin1.toml").write_bytes("# r\xe9glages\nlr = 0.1\n".encode("latin-1"))
    (folder / "random.bin").write_bytes(os.urandom(4096))
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    tampered = {**ckpt, "model": dict(ckpt["model"])}
    tampered["model"]["net.fc.weight"] = tampered["model"]["net.fc.weight"][:, :3].clone()
    torch.save(tampered, folder / "shape.pt")
    poisoned = {**ckpt, "model": dict(ckpt["model"])}
    poisoned["model"]["net.fc.weight"] = torch.full_like(ckpt["model"]["net.fc.weight"], float("nan"))
    torch.save(poisoned, folder / "nan.pt")
    torch.save({k: v for k, v in ckpt.items() if k != "stage"}, folder / "keyless.pt")


def _prepare(case: Case, root: Path, sources: Dict[str, Path], files: Path) -> Tuple[Path, Dict[str, str]]:
    """The case's folder, with copies of the ``sources`` (data, cache, run) its arguments name or
    its ``damage`` edits, and the names its arguments use."""
    folder = root / "".join(c if c.isalnum() else "_" for c in case.id)
    folder.mkdir()
    text = " ".join(case.argv)
    for name, source in sources.items():
        if f"{{{name}}}" in text or name in case.argv or case.damage is not None:
            shutil.copytree(source, folder / name)
    if case.damage is not None:
        case.damage(folder)
    return folder, {**{name: str(folder / name) for name in sources}, "files": str(files)}


def _run(case: Case, folder: Path, names: Dict[str, str]) -> subprocess.CompletedProcess:
    # The subprocess imports the webda this test imports, wherever its working folder is.
    path = os.pathsep.join(p for p in (str(Path(webda.__file__).parents[1]), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", **dict(case.env)}
    if not case.env:
        env.pop("WEBDA_KERNELS_BACKEND", None)
    argv = [a.format(**names) for a in case.argv]
    return subprocess.run([sys.executable, "-m", "webda", *argv], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def results(tiny_dataset, tiny_train_cache, tiny_image_run, tmp_path_factory):
    """``{case id: (folder, finished process)}`` for every case, run concurrently."""
    root = tmp_path_factory.mktemp("bad_input_cli")
    files = root / "files"
    files.mkdir()
    _damaged_files(files, tiny_image_run / "last.pt")
    sources = {"data": tiny_dataset, "cache": tiny_train_cache, "run": tiny_image_run}
    prepared = {case.id: _prepare(case, root, sources, files) for case in CASES}
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 1) as pool:
        futures = {case.id: pool.submit(_run, case, *prepared[case.id]) for case in CASES}
        return {name: (prepared[name][0], future.result()) for name, future in futures.items()}


def test_the_cases_repeat_the_run_fixtures_flags(tiny_dataset, tiny_image_run, tiny_train_cache):
    """The resume cases continue the fixture's run: they must give its settings."""
    flags = tiny_train_flags(tiny_dataset, tiny_image_run, tiny_train_cache)
    assert list(TRAIN[4:-2]) == flags[6:]
    stored = (tiny_image_run / "config.toml").read_text().splitlines()
    assert {"steps = 6", "batch_image = 8", "batch_frame = 8"} <= set(stored) and len(RUN_FLAGS) == 6


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_cli_bad_input(case, results):
    folder, done = results[case.id]
    assert "Traceback" not in done.stderr, done.stderr
    if case.word is None:
        assert done.returncode == 0, done.stderr
    else:
        lines = done.stderr.splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0].startswith(f"webda {case.argv[0]}: error: ") and case.word in lines[0], lines[0]
    for path in case.absent:
        assert not (folder / path).exists(), f"{path} was written"


def test_divergence_in_the_last_update_writes_no_checkpoint(tiny_dataset, tiny_train_cache, tmp_path, monkeypatch,
                                                            capsys):
    """The loss guard never sees the last update: weights that update made non-finite stop the run
    (exit 2, one line) before last.pt or an evaluation is written."""
    from webda.cli import main
    from webda.train import engine

    step = engine._step

    def last_update_diverges(run, batch, index):
        terms = step(run, batch, index)
        if index == run.cfg.steps - 1:
            with torch.no_grad():
                next(run.model.parameters()).fill_(float("nan"))
        return terms

    monkeypatch.setattr(engine, "_step", last_update_diverges)
    out = tmp_path / "run"
    flags = tiny_train_flags(tiny_dataset, out, tiny_train_cache)
    assert main(["train-image", *flags, "--steps", "2", "--batch-image", "8", "--batch-frame", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training diverged: after step 2" in err, err
    assert not (out / "last.pt").exists() and not (out / "evaluation-test.json").exists()

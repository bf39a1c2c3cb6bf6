"""Shared test setup.

Without a GPU, Triton kernels run under Triton's interpreter on CPU tensors: the variable
must be set before triton is imported, so it is set here, before any test module imports
webda_kernels. On a machine with CUDA the real Triton compiler is used.
"""

import os

# Before torch is imported, as `webda` does (webda/cli.py): idle OpenMP threads sleep, so the
# training tests do not crawl on CPU cores shared with other processes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


# ---- data fixtures (webda.data; shared by tests/test_data_*.py and any test needing real files) ----
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Root of the generated ``tiny`` dataset (seed 0), written once per session."""
    from webda.data.synthetic import generate

    root = tmp_path_factory.mktemp("tiny") / "data"
    generate(root, "tiny", seed=0, show_progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_card(tiny_dataset):
    """The ground-truth card of :func:`tiny_dataset`, as a dict."""
    import json

    from webda.data.synthetic import CARD_NAME

    return json.loads((tiny_dataset / CARD_NAME).read_text())


@pytest.fixture(scope="session")
def tiny_prepared(tiny_dataset, tmp_path_factory):
    """:func:`webda.data.prepare.prepare` run once on :func:`tiny_dataset` with 2 workers (cache in a temp folder)."""
    from webda.data.prepare import prepare

    return prepare(tiny_dataset, tmp_path_factory.mktemp("tiny_cache"), show_progress=False, workers=2)
@pytest.fixture(scope="session")
def mini_copy():
    """``mini_copy(src, dst, per_class=2)``: a copy of a generated dataset with ``per_class`` files
    of each class folder (and its classes.txt); returns ``dst``."""
    import shutil

    def copy(src, dst, per_class=2):
        for folder in ("web_images", "web_videos", "target/train", "target/test"):
            for class_dir in sorted((src / folder).iterdir()):
                out = dst / folder / class_dir.name
                out.mkdir(parents=True)
                for f in sorted(class_dir.iterdir())[:per_class]:
                    shutil.copy(f, out / f.name)
        shutil.copy(src / "classes.txt", dst / "classes.txt")
        return dst

    return copy
# ---- end of data fixtures ----


# ---- training fixtures (webda.train; shared by tests/test_train_*.py and tests/test_cli_*.py) ----
def tiny_train_flags(data, out, cache):
    """Flags of a seconds-long run on the tiny dataset (both stages accept them)."""
    return ["--data", str(data), "--out", str(out), "--cache-dir", str(cache), "--preset", "tiny", "--size", "32",
            "--batch-target", "8", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="session")
def tiny_train_cache(tmp_path_factory):
    """Keyframe cache of the training tests (kept out of the shared dataset folder)."""
    return tmp_path_factory.mktemp("train_cache")


@pytest.fixture(scope="session")
def tiny_image_run(tiny_dataset, tiny_train_cache, tmp_path_factory):
    """Output folder of a 6-step ``webda train-image`` run on :func:`tiny_dataset` (holds last.pt)."""
    from webda.cli import main

    out = tmp_path_factory.mktemp("image_run")
    flags = tiny_train_flags(tiny_dataset, out, tiny_train_cache)
    assert main(["train-image", *flags, "--steps", "6", "--batch-image", "8", "--batch-frame", "8"]) == 0
    return out
# ---- end of training fixtures ----

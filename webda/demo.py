"""``webda demo``: the whole method on the generated dataset in one command, with a report.

Into ``--out`` (default ``webda-demo``), for ``--preset`` tiny or small (the default; tiny:
about 1 minute, small: about 6 minutes on a 2-core CPU):

1. ``data/``: the generated webly-supervised dataset (``webda make-dataset``);
2. shot keyframes and web/target overlap removal (``webda prepare-data``);
3. ``image/``: stage 1, the image model with attention and domain adaptation (``webda train-image``);
4. ``image-no-da/``: the same without domain adaptation, the "before" network of the t-SNE figure;
5. ``video/``: stage 2, the video model from ``image/last.pt`` (``webda train-video``);
6. ``report/``: ``report.md``, ``index.html`` and their figures (:mod:`webda.report.demo_report`).

Training uses the trainer's preset of the same name (:data:`webda.config.TRAIN_PRESETS`) plus
periodic evaluation for the curves; every run folder holds the usual ``config.toml``,
``metrics.jsonl``, ``last.pt`` and ``evaluation-test.json``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from webda.config import SEED_BOUNDS, TrainConfig, flag_type
from webda.errors import UserError

# Evaluations on the target test split per training run (points of the accuracy curve).
EVALUATIONS = 4
# How long the demo takes, as the module docstring, `webda demo --help` and the README say it.
RUN_TIME = "tiny: about 1 minute, small: about 6 minutes on a 2-core CPU"


def _with_curve(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` evaluating :data:`EVALUATIONS` times during training."""
    return dataclasses.replace(cfg, eval_every=max(1, cfg.steps // EVALUATIONS))


def run_demo(out, preset: str = "small", seed: int = 0, progress: bool = True) -> Path:
    """Run every step into ``out`` (new or empty); returns the report's ``report.md``."""
    from webda.data.prepare import prepare
    from webda.data.synthetic import generate
    from webda.paths import output_folder
    from webda.report.demo_report import DATA, IMAGE, IMAGE_NO_DA, VIDEO, build_report
    from webda.train.engine import train
    from webda.train.stages import IMAGE_STAGE, VIDEO_STAGE

    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out} is not empty: pass a new --out folder (or delete this one)")
    output_folder(out, "--out")
    data = out / DATA
    common = dict(data=str(data), seed=seed, progress=progress)
    start = time.perf_counter()

    def announce(step: int, title: str) -> None:
        print(f"[{step}/6] {title} ({time.perf_counter() - start:.0f} s)", flush=True)

    announce(1, "generating the dataset")
    generate(data, preset, seed, show_progress=progress)
    announce(2, "shot keyframes and overlap removal")
    prepared = prepare(data, show_progress=progress)
    announce(3, "stage 1: image model (attention + domain adaptation)")
    train(_with_curve(IMAGE_STAGE.settings(preset, out=str(out / IMAGE), **common)))
    announce(4, "stage 1 without domain adaptation (the t-SNE's 'before')")
    train(IMAGE_STAGE.settings(preset, out=str(out / IMAGE_NO_DA), da=False, **common))
    announce(5, "stage 2: video model from the image model")
    train(_with_curve(VIDEO_STAGE.settings(preset, out=str(out / VIDEO), init=str(out / IMAGE / "last.pt"), **common)))
    announce(6, "report")
    report = build_report(out, seed, prepared, show_progress=progress)
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return report


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help=f"the whole method on the generated dataset, with a report ({RUN_TIME})",
        description=__doc__.split("\n\n")[0] + " Steps: make-dataset, overlap removal, train-image (with and "
        f"without domain adaptation), train-video, evaluate, report ({RUN_TIME}).",
    )
    parser.add_argument("--preset", choices=["tiny", "small"], default="small",
                        help="dataset and training size (default: small)")
    parser.add_argument("--out", default="webda-demo", help="output folder, new or empty (default: webda-demo)")
    parser.add_argument("--seed", type=flag_type(int, SEED_BOUNDS), default=0,
                        help="seed of the dataset and the training runs (default: 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    report = run_demo(args.out, args.preset, args.seed, args.progress)
    print(f"report: {report} (also {report.with_name('index.html')})")
    return 0

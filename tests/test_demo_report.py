"""``webda demo --preset tiny`` end to end: every report file exists, figures are real pictures,
the report's numbers are the runs' numbers."""

import json

import numpy as np
import pytest
from PIL import Image

from webda.cli import main
from webda.report.demo_report import IMAGE, REPORT, VIDEO, report_figures


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    return out


def test_demo_writes_every_report_file(demo_run):
    report = demo_run / REPORT
    markdown = (report / "report.md").read_text()
    html = (report / "index.html").read_text()
    for png in report_figures(demo_run):
        assert png.is_file(), png
        assert f"]({png.name})" in markdown
        assert f'src="{png.name}"' in html
    for run in ("image", "image-no-da", "video"):
        for name in ("last.pt", "metrics.jsonl", "config.toml", "evaluation-test.json"):
            assert (demo_run / run / name).is_file(), (run, name)


@pytest.mark.parametrize("name", ["confusion_image", "confusion_video", "curves_image", "curves_video", "tsne",
                                  "attention"])
def test_report_figures_are_pictures(demo_run, name):
    with Image.open(demo_run / REPORT / f"{name}.png") as image:
        image.verify()
    with Image.open(demo_run / REPORT / f"{name}.png") as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert 250 <= width <= 3000 and 200 <= height <= 3000, image.size
    assert pixels.std() > 10  # not blank
    colours = np.unique(pixels.reshape(-1, 3).astype(np.uint8), axis=0)
    assert len(colours) > 50  # drawn content, not a flat fill


def test_report_states_the_runs_numbers(demo_run):
    markdown = (demo_run / REPORT / "report.md").read_text()
    for run in (IMAGE, VIDEO):
        top1 = json.loads((demo_run / run / "evaluation-test.json").read_text())["top1"]
        assert f"{100 * top1:.1f}" in markdown
    assert "planted duplicates" in markdown
    assert "synthetic" in markdown
    assert "clean" in markdown and "noisy" in markdown


def test_demo_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "something").write_text("x")
    assert main(["demo", "--preset", "tiny", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_report_shows_the_recorded_ablation(demo_run):
    from webda.ablate import TITLE

    markdown = (demo_run / REPORT / "report.md").read_text()
    assert f"## {TITLE}" in markdown and "not computed by this demo" in markdown


def test_demo_states_its_run_time_one_way(capsys):
    """The module docstring, ``webda demo --help``, ``webda --help`` and the README give the same run time."""
    from pathlib import Path

    import webda.demo

    def words(text):
        return " ".join(text.split())

    for argv in (["demo", "--help"], ["--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert webda.demo.RUN_TIME in words(capsys.readouterr().out), argv
    assert webda.demo.RUN_TIME in words(webda.demo.__doc__)
    assert webda.demo.RUN_TIME in words((Path(__file__).resolve().parent.parent / "README.md").read_text())

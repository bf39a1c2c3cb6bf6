"""The command line: help on every command; user mistakes give one line and exit status 2."""

import argparse

import pytest
import torch

from conftest import tiny_train_flags
from webda.cli import main
from webda.config import ImageConfig, add_arguments, resolve


@pytest.mark.parametrize("command", ["train-image", "train-video", "evaluate"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: webda " + command in capsys.readouterr().out


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    return err


def test_cli_bad_paths_and_settings(tmp_path, capsys):
    assert "--data is required" in _error(["train-image", "--out", str(tmp_path / "o")], capsys)
    assert "missing folder" in _error(["train-image", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                                       "--no-progress"], capsys)
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = [")
    assert "not valid TOML" in _error(["train-image", "--config", str(bad)], capsys)
    bad.write_text("learning_rate = 0.1\n")
    assert "unknown setting 'learning_rate'" in _error(["train-image", "--config", str(bad)], capsys)
    bad.write_text('steps = "many"\n')
    assert "steps must be int" in _error(["train-image", "--config", str(bad)], capsys)
    assert "does not exist" in _error(["train-image", "--config", str(tmp_path / "none.toml")], capsys)
    assert "--init is required" in _error(["train-video", "--data", "d", "--out", "o"], capsys)


def test_cli_bad_checkpoints(tiny_dataset, tiny_train_cache, tiny_image_run, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    assert "not a readable checkpoint" in _error(["evaluate", "--data", str(tiny_dataset), "--checkpoint", str(junk)],
                                                 capsys)
    torch.save({"weights": 1}, junk)
    assert "not a webda checkpoint" in _error(["evaluate", "--data", str(tiny_dataset), "--checkpoint", str(junk)],
                                              capsys)
    assert "does not exist" in _error(["evaluate", "--data", str(tiny_dataset), "--checkpoint",
                                       str(tmp_path / "missing.pt")], capsys)
    flags = tiny_train_flags(tiny_dataset, tiny_image_run, tiny_train_cache)
    assert "pass --resume" in _error(["train-image", *flags], capsys)
    assert "different settings" in _error(["train-image", *flags, "--resume", "--lr", "0.5"], capsys)
    video_flags = tiny_train_flags(tiny_dataset, tmp_path / "v", tiny_train_cache)
    assert "differs from" in _error(["train-video", *video_flags, "--init", str(tiny_image_run / "last.pt"),
                                     "--arch", "resnet18"], capsys)
    assert "does not exist" in _error(["train-video", *video_flags, "--init", str(tmp_path / "none.pt")], capsys)


def test_cli_resolved_config_reads_back(tiny_image_run):
    parser = argparse.ArgumentParser()
    add_arguments(parser, ImageConfig)
    written = tiny_image_run / "config.toml"
    again = resolve(ImageConfig, parser.parse_args(["--config", str(written)]))
    original = resolve(ImageConfig, parser.parse_args(["--config", str(written), "--steps", "6"]))
    assert again == original and again.steps == 6 and again.size == 32
    override = resolve(ImageConfig, parser.parse_args(["--config", str(written), "--lr", "0.2", "--no-da"]))
    assert override.lr == 0.2 and override.da is False and override.size == 32


def test_cli_diverging_run(tiny_dataset, tiny_train_cache, tmp_path, capsys):
    """A learning rate that makes the loss non-finite stops the run with one line, not a traceback."""
    flags = tiny_train_flags(tiny_dataset, tmp_path / "nan", tiny_train_cache)
    assert "training diverged" in _error(["train-image", *flags, "--lr", "1e30", "--warmup-steps", "0"], capsys)

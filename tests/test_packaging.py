"""What pyproject.toml promises holds: the oldest Python it admits parses every source file,
and the TOML settings path works there (tomli before Python 3.11)."""

import ast
import sys
from pathlib import Path

import pytest

from webda import config

ROOT = Path(__file__).resolve().parent.parent


def _oldest_python():
    spec = config._toml().loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert spec.startswith(">="), spec
    return tuple(int(part) for part in spec[2:].split("."))


SOURCES = sorted(p for folder in ("webda", "webda_kernels", "benchmarks") for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_source_parses_with_oldest_python(path):
    ast.parse(path.read_text(), filename=str(path), feature_version=_oldest_python())


def test_settings_file_read_without_tomllib(tmp_path, monkeypatch):
    """Before Python 3.11 there is no tomllib: ``--config`` reads the file with tomli."""
    settings = tmp_path / "run.toml"
    settings.write_text('lr = 0.1\nbranches = "I"\n')
    monkeypatch.setitem(sys.modules, "tomllib", None)  # makes `import tomllib` fail
    assert config._toml().__name__ == "tomli"
    assert config._read_toml(str(settings)) == {"lr": 0.1, "branches": "I"}
    settings.write_text("lr = \n")
    with pytest.raises(config.UserError, match="not valid TOML"):
        config._read_toml(str(settings))

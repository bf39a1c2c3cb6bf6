"""Every ```python block of README.md runs, each on its own (they are meant to be copy-pasted),
and the README's command-line reference names every ``webda`` command."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SNIPPETS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippet_runs(code):
    exec(compile(code, f"README.md snippet", "exec"), {"__name__": "__readme__"})


def test_readme_lists_every_command():
    from webda.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    text = README.read_text()
    missing = [name for name in subparsers.choices if f"`webda {name}" not in text]
    assert not missing, f"README.md does not document: {missing}"

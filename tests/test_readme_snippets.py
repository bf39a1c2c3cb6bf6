"""Every ```python block of README.md and docs/*.md runs, each on its own (they are meant to be
copy-pasted), and the documentation's command-line reference names every ``webda`` command."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPETS = [
    (page, code)
    for page in PAGES
    for code in re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)
]


def test_pages_have_snippets():
    assert sum(page.name == "README.md" for page, _ in SNIPPETS) >= 1
    assert len(SNIPPETS) >= 5


@pytest.mark.parametrize("page, code", SNIPPETS,
                         ids=[f"{page.stem}-snippet{i}" for i, (page, _) in enumerate(SNIPPETS)])
def test_snippet_runs(page, code):
    exec(compile(code, f"{page.name} snippet", "exec"), {"__name__": "__readme__"})


def test_usage_lists_every_command():
    from webda.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    text = (ROOT / "docs" / "usage.md").read_text()
    missing = [name for name in subparsers.choices if f"`webda {name}" not in text]
    assert not missing, f"docs/usage.md does not document: {missing}"


def test_relative_links_resolve():
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in PAGES
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text())
        if not (page.parent / target).exists()
    ]
    assert not broken, f"links to missing files: {broken}"

"""A report as a list of blocks (headings, paragraphs, tables, figures), written as Markdown
(``report.md``, readable in any Markdown viewer) and as a standalone ``index.html``.

Paragraph text may use Markdown's ``**bold**`` and ```code``` spans; both writers render them.
Figure paths are relative to the report folder.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence, Union


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[object]]


@dataclass
class Figure:
    path: str
    caption: str


Block = Union[Heading, Paragraph, Table, Figure]


@dataclass
class Document:
    title: str
    blocks: List[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Document":
        self.blocks.extend(blocks)
        return self

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            if isinstance(block, Heading):
                out += ["#" * block.level + " " + block.text, ""]
            elif isinstance(block, Paragraph):
                out += [block.text, ""]
            elif isinstance(block, Table):
                out.append("| " + " | ".join(map(str, block.header)) + " |")
                out.append("|" + "---|" * len(block.header))
                out += ["| " + " | ".join(map(str, row)) + " |" for row in block.rows]
                out.append("")
            else:
                out += [f"![{block.caption}]({block.path})", "", f"*{block.caption}*", ""]
        return "\n".join(out)

    def html(self) -> str:
        body = []
        for block in self.blocks:
            if isinstance(block, Heading):
                body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
            elif isinstance(block, Paragraph):
                body.append(f"<p>{_inline(block.text)}</p>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{_inline(str(h))}</th>" for h in block.header)
                rows = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>" for row in block.rows)
                body.append(f"<table><tr>{head}</tr>{rows}</table>")
            else:
                body.append(f'<figure><img src="{html.escape(block.path)}" alt="{html.escape(block.caption)}">'
                            f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}</title>"
                f"<style>{_CSS}</style></head>\n<body><h1>{html.escape(self.title)}</h1>\n"
                + "\n".join(body) + "\n</body></html>\n")

    def write(self, folder) -> Path:
        """Write ``report.md`` and ``index.html`` into ``folder``; returns the Markdown file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.html").write_text(self.html())
        (folder / "report.md").write_text(self.markdown())
        return folder / "report.md"


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "img{max-width:100%}figcaption{font-style:italic;color:#555}code{background:#f3f3f3}")


def _inline(text: str) -> str:
    """Escape ``text`` for HTML and render its Markdown ``**bold**`` and ```code``` spans."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)

"""A small document model rendered both as Markdown and as stand-alone HTML.

The report is built as a list of blocks (headings, paragraphs, tables, images,
lists) so that the Markdown and the HTML say exactly the same thing; the HTML
embeds its images, so the one file can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["Bullets", "Document", "Heading", "Image", "Paragraph", "Table", "ci_text", "p_text"]


class _Bounds(Protocol):
    @property
    def low(self) -> float: ...

    @property
    def high(self) -> float: ...


def ci_text(interval: _Bounds) -> str:
    """ "0.701-0.812", or "-" for an interval that could not be computed."""
    if math.isnan(interval.low):
        return "-"
    return f"{interval.low:.3f}-{interval.high:.3f}"


def p_text(p: float) -> str:
    """A p-value as tables show it."""
    if math.isnan(p):
        return "-"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Image:
    path: str
    """Relative to the report's folder."""
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            if isinstance(block, Heading):
                out += ["#" * block.level + " " + block.text, ""]
            elif isinstance(block, Paragraph):
                out += [block.text, ""]
            elif isinstance(block, Bullets):
                out += [f"- {item}" for item in block.items] + [""]
            elif isinstance(block, Table):
                if block.caption:
                    out += [f"*{block.caption}*", ""]
                out.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
                out.append("|" + "|".join("---" for _ in block.header) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
                out.append("")
            elif isinstance(block, Image):
                out += [f"![{block.caption}]({block.path})", "", f"*{block.caption}*", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self, folder: Path) -> str:
        """Stand-alone HTML; images under ``folder`` are embedded as data URIs."""
        body = []
        for block in self.blocks:
            if isinstance(block, Heading):
                level = min(max(block.level, 1), 6)
                body.append(f"<h{level}>{html.escape(block.text)}</h{level}>")
            elif isinstance(block, Paragraph):
                body.append(f"<p>{_inline(block.text)}</p>")
            elif isinstance(block, Bullets):
                items = "".join(f"<li>{_inline(i)}</li>" for i in block.items)
                body.append(f"<ul>{items}</ul>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
                rows = "".join(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                    for row in block.rows
                )
                caption = f"<caption>{_inline(block.caption)}</caption>" if block.caption else ""
                body.append(f"<table>{caption}<thead><tr>{head}</tr></thead>{rows}</table>")
            elif isinstance(block, Image):
                data = base64.b64encode((folder / block.path).read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" '
                    f'alt="{html.escape(block.caption)}"><figcaption>'
                    f"{_inline(block.caption)}</figcaption></figure>"
                )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>"
            f"<body><h1>{html.escape(self.title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
        )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _inline(text: str) -> str:
    """Escape, then turn Markdown **bold** and `code` into HTML."""
    escaped = html.escape(text)
    for marker, tag in (("**", "strong"), ("`", "code")):
        parts = escaped.split(marker)
        if len(parts) % 2 == 1:  # balanced markers only
            escaped = "".join(
                p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(parts)
            )
    return escaped


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6rem 0 1.2rem; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f2f2f2; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: 0.3rem; }
figure { margin: 1rem 0; } img { max-width: 100%; }
figcaption { font-style: italic; font-size: 0.9rem; color: #444; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""

"""The report as one self-contained HTML page: every leaderboard a table sorted by clicking a
header, the figures embedded, the Markdown prose of ``index.md`` around them.

Opening it needs no network: figures are data URIs, the style and the sorting script inline.
Each table cell carries the number it shows (``data-sort``) and each row its record in the
JSON export (``data-record``), which the page also embeds (``#leaderboards``).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
from pathlib import Path

import jinja2
import markdown

from lmbench.reporting.formats import column_key, records
from lmbench.reporting.leaderboard import Board, cells, columns, footnote, right_aligned
from lmbench.store import integrity

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("lmbench.reporting", "templates"),
                               autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                               lstrip_blocks=True)


def _keys(board: Board) -> list[str]:
    """A name per column for the page's attributes: the JSON export's where it has one."""
    methods = [column_key(name) for name in board.method_columns]
    source = ["source"] if board.has_reference else []
    return ["labels", *methods, *source, "seeds", *board.metrics, "avg_rank"]


def board_view(board: Board, first_record: int) -> dict:
    """What the template draws of one leaderboard, intervals shown where there are any."""
    shown = dataclasses.replace(board, ci="interval")
    keys, names = _keys(board), columns(board)
    rows = []
    for i, row in enumerate(board.rows):
        sort = [row.labels, *row.method, *([row.source] if board.has_reference else []), row.seeds,
                *(row.values.get(m, (None, None))[0] for m in board.metrics), row.rank]
        rows.append({
            "index": first_record + i,
            "kind": "reference" if row.source != "lmbench" else ("flagged" if row.problems else "lmbench"),
            "cells": [{"key": key, "text": text, "bold": bold, "number": right_aligned(j, names[j]),
                       "sort": "" if value is None else value}
                      for j, (key, (text, bold), value) in enumerate(zip(keys, cells(shown, row), sort))],
        })
    return {"dataset": board.dataset, "title": shown.title(), "footnote": footnote(shown), "rows": rows,
            "columns": [{"key": key, "name": name, "number": right_aligned(j, name)}
                        for j, (key, name) in enumerate(zip(keys, names))]}


def _embed_images(text: str, folder: Path, figures: set[str]) -> str:
    """Markdown image links to the report's own figures (names in ``folder``) as data URIs; any
    other image link is left out of the page."""
    def inline(match: re.Match) -> str:
        path = folder / match.group(2)
        if match.group(2) not in figures or not path.is_file():
            return f"(figure {html.escape(match.group(2))} left out: not one the report wrote)"
        data = base64.b64encode(path.read_bytes()).decode()
        return f"![{match.group(1)}](data:image/png;base64,{data})"
    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", inline, text)


def write_html(index: list[str | Board], out: Path, title: str, figures: set[str] = frozenset()) -> Path:
    """``out/index.html`` from the report's index: Markdown lines and leaderboards, in order.
    ``figures``: the names of the figures the report wrote, the only images the page embeds.
    The prose is HTML-escaped before Markdown reads it: no markup of a label's reaches the page."""
    blocks, prose, count = [], [], 0

    def flush():
        if prose:
            text = html.escape("\n".join(prose), quote=False).replace("\\&lt;", "&lt;").replace("\\&gt;", "&gt;")
            text = _embed_images(text, out, figures)
            blocks.append({"html": markdown.markdown(text, extensions=["tables"])})
            prose.clear()

    boards = [item for item in index if isinstance(item, Board)]
    for item in index:
        if isinstance(item, Board):
            flush()
            blocks.append({"board": board_view(item, count)})
            count += len(item.rows)
        else:
            prose.append(item)
    flush()
    page = TEMPLATES.get_template("report.html.j2").render(
        title=title, blocks=blocks, records_json=json.dumps(records(boards)).replace("<", "\\u003c"))
    path = out / "index.html"
    integrity.write_text(path, page)
    return path

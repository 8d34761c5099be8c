"""Leaderboards as text for papers and tools: Markdown, LaTeX (booktabs), CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import re

from lmbench.reporting.leaderboard import Board, cells, columns, footnote, right_aligned
from lmbench.reporting.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

FORMATS = ("rich", "markdown", "latex", "csv", "json")


_MARKDOWN_ACTIVE = re.compile(r"([\\`*_\[\]!<>|])")


def md_text(value: object) -> str:
    """Any text from a matrix, a dataset or a results folder, as Markdown that shows it literally:
    no emphasis, link, image, code or HTML of its own, no table cell broken."""
    return _MARKDOWN_ACTIVE.sub(r"\\\1", " ".join(str(value).split()))


def to_markdown(boards: list[Board]) -> str:
    parts = []
    for board in boards:
        names = columns(board)
        lines = [f"**{md_text(board.title())}**", "", "| " + " | ".join(md_text(n) for n in names) + " |",
                 "|" + "|".join("---:" if right_aligned(i, n) else "---" for i, n in enumerate(names)) + "|"]
        for row in board.rows:
            texts = [f"**{md_text(text)}**" if bold else md_text(text) for text, bold in cells(board, row)]
            lines.append("| " + " | ".join(texts) + " |")
        lines += [""] + [md_text(line) + "  " for line in footnote(board).split("\n")]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "†": r"$\dagger$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(boards: list[Board]) -> str:
    """One booktabs table per board; the best value of each label count in bold."""
    parts = []
    for board in boards:
        names = columns(board)
        align = "".join("r" if right_aligned(i, n) else "l" for i, n in enumerate(names))
        lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{latex_escape(board.title())}}}",
                 f"\\begin{{tabular}}{{{align}}}", r"\toprule",
                 " & ".join(latex_escape(n) for n in names) + r" \\", r"\midrule"]
        previous = None
        for row in board.rows:
            if previous is not None and row.labels != previous:
                lines.append(r"\midrule")
            texts = [f"\\textbf{{{latex_escape(t)}}}" if bold else latex_escape(t) for t, bold in cells(board, row)]
            lines.append(" & ".join(texts) + r" \\")
            previous = row.labels
        lines += [r"\bottomrule", r"\end{tabular}"]
        legend = r" \\ ".join(latex_escape(line) for line in footnote(board).split("\n"))
        lines.append(f"\\par\\footnotesize {legend}")
        lines.append(r"\end{table}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def column_key(name: str) -> str:
    """A method column's name as a record key: "Pre-training" -> "pre_training"."""
    return name.lower().replace(" ", "_").replace("-", "_")


def records(boards: list[Board]) -> list[dict]:
    """One flat record per row: dataset, eval mode, method, seeds, rank, and per metric the mean,
    std over seeds, bootstrap interval, Holm-adjusted p-value against the best and the bold mark."""
    out = []
    for board in boards:
        for row in board.rows:
            record = {"dataset": board.dataset, "eval_mode": board.eval_mode, "unit": board.unit,
                      "labels": row.labels, "source": row.source, "seeds": row.seeds, "avg_rank": row.rank,
                      "health": row.health if row.source == "lmbench" else None}
            record.update({column_key(name): value
                           for name, value in zip(board.method_columns, row.method)})
            for metric in board.metrics:
                mean, std = row.values.get(metric, (None, None))
                low, high = row.intervals.get(metric, (None, None))
                record.update({metric: mean, f"{metric}_std": std, f"{metric}_ci_low": low,
                               f"{metric}_ci_high": high, f"{metric}_p_vs_best": row.pvalues.get(metric),
                               f"{metric}_bold": board.bold(row, metric)})
            out.append(record)
    return out


def to_csv(boards: list[Board]) -> str:
    rows = records(boards)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_json(boards: list[Board]) -> str:
    return json.dumps(
        [{"dataset": b.dataset, "eval_mode": b.eval_mode, "unit": b.unit, "metrics": b.metrics,
          "confidence": b.confidence, "significance": b.significance, "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
          "bootstrap_seed": BOOTSTRAP_SEED, "legend": b.legend(), "not_shown": dict(b.not_ok),
          "rows": records([b])} for b in boards],
        indent=2,
    ) + "\n"


RENDERERS = {"markdown": to_markdown, "latex": to_latex, "csv": to_csv, "json": to_json}

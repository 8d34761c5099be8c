"""Leaderboards shaped like the paper's Tables 1-3: one table per dataset, rows grouped by
number of labels, MRE then SDR at the dataset's thresholds, mean ± std over seeds, the best
of each label count in bold and each method's average MRE rank across label counts."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.markup import escape
from rich.table import Table

from lmbench.core.keys import content_key
from lmbench.run import results
from lmbench.run.metrics import sdr_name

#: filter name -> the run row columns it matches (a plugin's label or its name)
FILTER_COLUMNS = {
    "dataset": ("dataset_label", "dataset"), "pretrainer": ("pretrainer_label", "pretrainer"),
    "backbone": ("backbone_label", "backbone"), "head": ("head_label", "head"),
    "labels": ("labels",), "matrix": ("matrix",),
}


@dataclass
class Row:
    labels: int
    method: tuple[str, ...]  # (pretrainer, head) and the backbone when a dataset has several
    seeds: int
    values: dict[str, tuple[float, float | None]]  # metric -> (mean, std) over seeds
    source: str = "lmbench"  # or the published table a reference row comes from
    rank: float | None = None  # the method's MRE rank, averaged over label counts


@dataclass
class Board:
    dataset: str
    unit: str
    eval_mode: str
    metrics: list[str]  # "mre" then "sdr@t" for each threshold
    method_columns: list[str]
    rows: list[Row] = field(default_factory=list)
    not_ok: Counter = field(default_factory=Counter)  # status -> count of failed / skipped runs
    split: str = "test"  # or "val": for choosing settings without reading the test set

    def best(self, labels: int, metric: str) -> float | None:
        """The best mean of ``metric`` among lmbench's rows with ``labels`` labels."""
        means = [r.values[metric][0] for r in self.rows
                 if r.labels == labels and metric in r.values and r.source == "lmbench"]
        if not means:
            return None
        return min(means) if metric == "mre" else max(means)

    @property
    def has_reference(self) -> bool:
        return any(r.source != "lmbench" for r in self.rows)

    def title(self) -> str:
        split = "validation" if self.split == "val" else self.split
        return f"{self.dataset}: {split} set, {self.eval_mode} evaluation (mean ± std over seeds)"


def matches(run: dict, filters: dict[str, list]) -> bool:
    """Whether a run row (or reference row) passes every filter: any listed value matches."""
    for key, wanted in filters.items():
        if not wanted:
            continue
        values = {str(run.get(column)) for column in FILTER_COLUMNS[key] if run.get(column) is not None}
        if not values & {str(w) for w in wanted}:
            return False
    return True


def build_boards(roots: Iterable[Path], eval_mode: str = "native", filters: dict[str, list] | None = None,
                 metrics: list[str] | None = None, reference: list[dict] | None = None,
                 split: str = "test") -> list[Board]:
    """Aggregate the runs under ``roots`` (deduplicated on run_key) into one board per dataset.

    ``metrics`` picks columns ("mre", "sdr@2", ...); ``reference`` rows (published numbers,
    test-set numbers) join the boards of their dataset, marked with their source.
    """
    filters = filters or {}
    runs = [r for r in results.read_runs(roots) if matches(r, filters)]
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_dataset[run["dataset_label"]].append(run)
    boards = []
    for dataset, dataset_runs in sorted(by_dataset.items()):
        ok = [r for r in dataset_runs if r["status"] == "ok"]
        thresholds = json.loads(ok[0]["thresholds"]) if ok else []
        available = ["mre"] + [sdr_name(t) for t in thresholds]
        multiple_backbones = len({r["backbone_label"] for r in ok}) > 1
        board = Board(
            dataset=dataset,
            unit=ok[0]["unit"] if ok else "?",
            eval_mode=eval_mode,
            metrics=[m for m in available if metrics is None or m in metrics],
            method_columns=["Pre-training", "Head"] + (["Backbone"] if multiple_backbones else []),
            not_ok=Counter(r["status"] for r in dataset_runs if r["status"] != "ok"),
            split=split,
        )
        board.rows = _rows(ok, eval_mode, board.metrics, multiple_backbones, split)
        _rank(board)
        if reference and ok:
            names = {r["dataset"] for r in ok}
            board.rows += _reference_rows(
                [r for r in reference if r["dataset"] in names and matches(r, filters)], board, multiple_backbones)
            board.rows.sort(key=lambda r: (r.labels, r.source != "lmbench"))
        boards.append(board)
    return boards


def _rows(ok: list[dict], eval_mode: str, metrics: list[str], multiple_backbones: bool, split: str) -> list[Row]:
    samples: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    configs = defaultdict(set)  # method -> configurations run under that name
    latest = {}  # one run per configuration, label count and seed: the latest finished
    for run in sorted(ok, key=lambda r: r["finished_at"] or ""):
        latest[(_config(run), _method(run, True), run["labels"], run["seed"])] = run
    ok = list(latest.values())
    for run in ok:
        configs[_method(run, multiple_backbones)].add(_config(run))
    for run in ok:
        table = results.read_table("metrics", run["_file"], split=split)
        if table is None:
            continue
        method = _method(run, multiple_backbones)
        if len(configs[method]) > 1:  # same labels, other settings: never pooled
            method = (f"{method[0]} [{_config(run)}]", *method[1:])
        for m in table.to_pylist():
            if m["eval_mode"] == eval_mode and m["landmark"] == "all":
                samples[(run["labels"], method)][m["metric"]].append(m["value"])
    rows = []
    for (labels, method), values in sorted(samples.items()):
        seeds = max(len(v) for v in values.values())
        stats = {k: (float(np.mean(v)), float(np.std(v))) for k, v in values.items() if k in metrics}
        rows.append(Row(labels, method, seeds, stats))
    return rows


def _rank(board: Board) -> None:
    """Each method's rank by MRE within its label count (1 = best), averaged over label counts."""
    ranks = defaultdict(list)
    for labels in sorted({r.labels for r in board.rows}):
        group = sorted((r for r in board.rows if r.labels == labels and "mre" in r.values), key=lambda r: r.values["mre"][0])
        for position, row in enumerate(group, start=1):
            ranks[row.method].append(position)
    for row in board.rows:
        if ranks[row.method]:
            row.rank = float(np.mean(ranks[row.method]))


def _reference_rows(reference: list[dict], board: Board, multiple_backbones: bool) -> list[Row]:
    grouped: dict[tuple, dict[str, tuple[float, float | None]]] = defaultdict(dict)
    for r in reference:
        if r["metric"] in board.metrics:
            method = (r["pretrainer_label"], r["head_label"]) + ((r["backbone_label"],) if multiple_backbones else ())
            grouped[(r["labels"], method, r["source"], r["seeds"])][r["metric"]] = (r["value"], r["std"])
    rows, seen = [], set()
    for (labels, method, source, seeds), values in sorted(grouped.items()):
        means = (labels, method, tuple(sorted((k, v[0]) for k, v in values.items())))
        if means not in seen:  # a table repeating another's row
            seen.add(means)
            rows.append(Row(labels, method, seeds, values, source=f"paper {source}"))
    return rows


CONFIG_FIELDS = ("dataset_params", "pretrainer_params", "backbone_params", "head_params", "finetune",
                 "selection", "image_size")


def _method(run: dict, with_backbone: bool) -> tuple[str, ...]:
    pretraining = run["pretrainer_label"] + (f" (trained on {run['joint']})" if run.get("joint") else "")
    return (pretraining, run["head_label"]) + ((run["backbone_label"],) if with_backbone else ())


def _config(run: dict) -> str:
    """A short id of everything but the seed and label count that the run's numbers depend on."""
    return content_key({k: run[k] for k in CONFIG_FIELDS}, length=6)


def header(metric: str, unit: str) -> str:
    if metric == "mre":
        return f"MRE ↓ ({unit})"
    return f"SDR {metric.split('@')[1]}{unit} ↑ (%)"


def cell_text(row: Row, metric: str) -> str:
    """"mean ± std", or the mean alone where there is no spread to show (one seed, none given)."""
    if metric not in row.values:
        return "-"
    mean, std = row.values[metric]
    return f"{mean:.2f}" if std is None or row.seeds < 2 else f"{mean:.2f} ± {std:.2f}"


def right_aligned(index: int, name: str) -> bool:
    """Numbers align right in every format: the label count, metrics, seeds and rank."""
    return index == 0 or "↓" in name or "↑" in name or name in ("Seeds", "Avg rank")


def columns(board: Board) -> list[str]:
    """The column headers every format shares."""
    source = ["Source"] if board.has_reference else []
    return ["Labels", *board.method_columns, *source, "Seeds", *(header(m, board.unit) for m in board.metrics), "Avg rank"]


def cells(board: Board, row: Row) -> list[tuple[str, bool]]:
    """One row's cells as (text, bold), in ``columns`` order."""
    source = [(row.source, False)] if board.has_reference else []
    out = [(str(row.labels), False), *((m, False) for m in row.method), *source, (str(row.seeds), False)]
    for metric in board.metrics:
        best = board.best(row.labels, metric)
        out.append((cell_text(row, metric), row.source == "lmbench" and metric in row.values and row.values[metric][0] == best))
    out.append((f"{row.rank:.1f}" if row.rank is not None else "-", False))
    return out


def footnote(board: Board) -> str | None:
    if not board.not_ok:
        return None
    parts = [f"{count} {status}" for status, count in sorted(board.not_ok.items())]
    return f"Not shown: {', '.join(parts)} run(s); see `lmbench leaderboard --failures`."


def render_rich(board: Board) -> Table:
    table = Table(title=board.title(), caption=footnote(board))
    for i, name in enumerate(columns(board)):
        table.add_column(name, justify="right" if right_aligned(i, name) else "left")
    previous = None
    for row in board.rows:
        if previous is not None and row.labels != previous:
            table.add_section()
        texts = [f"[bold]{escape(text)}[/bold]" if bold else escape(text) for text, bold in cells(board, row)]
        if row.labels == previous:
            texts[0] = ""
        table.add_row(*texts, style="dim" if row.source != "lmbench" else None)
        previous = row.labels
    return table

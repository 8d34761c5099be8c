"""Leaderboards shaped like the paper's Tables 1-3: one table per dataset, rows grouped by
number of labels, MRE then SDR at the dataset's thresholds, mean ± std over seeds."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from rich.markup import escape
from rich.table import Table

from lmbench import results
from lmbench.keys import content_key
from lmbench.metrics import sdr_name


@dataclass
class Row:
    labels: int
    method: tuple[str, ...]  # (pretrainer, head) and the backbone when a dataset has several
    seeds: int
    values: dict[str, tuple[float, float]]  # metric -> (mean, std) over seeds


@dataclass
class Board:
    dataset: str
    unit: str
    eval_mode: str
    metrics: list[str]  # "mre" then "sdr@t" for each threshold
    method_columns: list[str]
    rows: list[Row] = field(default_factory=list)
    not_ok: Counter = field(default_factory=Counter)  # status -> count of failed / skipped runs

    def best(self, labels: int, metric: str) -> float | None:
        """The best mean of ``metric`` among the rows with ``labels`` labels."""
        means = [r.values[metric][0] for r in self.rows if r.labels == labels and metric in r.values]
        if not means:
            return None
        return min(means) if metric == "mre" else max(means)


def build_boards(roots: Iterable[Path], eval_mode: str = "native") -> list[Board]:
    runs = results.read_runs(roots)
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_dataset[run["dataset_label"]].append(run)
    boards = []
    for dataset, dataset_runs in sorted(by_dataset.items()):
        ok = [r for r in dataset_runs if r["status"] == "ok"]
        thresholds = json.loads(ok[0]["thresholds"]) if ok else []
        multiple_backbones = len({r["backbone_label"] for r in ok}) > 1
        board = Board(
            dataset=dataset,
            unit=ok[0]["unit"] if ok else "?",
            eval_mode=eval_mode,
            metrics=["mre"] + [sdr_name(t) for t in thresholds],
            method_columns=["Pre-training", "Head"] + (["Backbone"] if multiple_backbones else []),
            not_ok=Counter(r["status"] for r in dataset_runs if r["status"] != "ok"),
        )
        samples: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        configs = defaultdict(set)  # method -> configurations run under that name
        latest = {}  # one run per configuration, label count and seed: the latest finished
        for run in sorted(ok, key=lambda r: r["finished_at"] or ""):
            latest[(_config(run), _method(run, True), run["labels"], run["seed"])] = run
        ok = list(latest.values())
        for run in ok:
            configs[_method(run, multiple_backbones)].add(_config(run))
        for run in ok:
            table = results.read_table("metrics", run["_file"])
            if table is None:
                continue
            method = _method(run, multiple_backbones)
            if len(configs[method]) > 1:  # same labels, other settings: never pooled
                method = (f"{method[0]} [{_config(run)}]", *method[1:])
            for m in table.to_pylist():
                if m["eval_mode"] == eval_mode and m["split"] == "test" and m["landmark"] == "all":
                    samples[(run["labels"], method)][m["metric"]].append(m["value"])
        for (labels, method), values in sorted(samples.items()):
            seeds = max(len(v) for v in values.values())
            stats = {k: (float(np.mean(v)), float(np.std(v))) for k, v in values.items() if k in board.metrics}
            board.rows.append(Row(labels, method, seeds, stats))
        boards.append(board)
    return boards


CONFIG_FIELDS = ("dataset_params", "pretrainer_params", "backbone_params", "head_params", "finetune",
                 "selection", "image_size")


def _method(run: dict, with_backbone: bool) -> tuple[str, ...]:
    pretraining = run["pretrainer_label"] + (f" (trained on {run['joint']})" if run.get("joint") else "")
    return (pretraining, run["head_label"]) + ((run["backbone_label"],) if with_backbone else ())


def _config(run: dict) -> str:
    """A short id of everything but the seed and label count that the run's numbers depend on."""
    return content_key({k: run[k] for k in CONFIG_FIELDS}, length=6)


def _header(metric: str, unit: str) -> str:
    if metric == "mre":
        return f"MRE ↓ ({unit})"
    return f"SDR {metric.split('@')[1]}{unit} ↑ (%)"


def render_rich(board: Board) -> Table:
    table = Table(
        title=f"{board.dataset}: test set, {board.eval_mode} evaluation (mean ± std over seeds)",
        caption=_footnote(board),
    )
    table.add_column("Labels", justify="right")
    for column in board.method_columns:
        table.add_column(column)
    table.add_column("Seeds", justify="right")
    for metric in board.metrics:
        table.add_column(_header(metric, board.unit), justify="right")
    previous = None
    for row in board.rows:
        if previous is not None and row.labels != previous:
            table.add_section()
        cells = [str(row.labels) if row.labels != previous else "", *map(escape, row.method), str(row.seeds)]
        for metric in board.metrics:
            if metric not in row.values:
                cells.append("-")
                continue
            mean, std = row.values[metric]
            text = f"{mean:.2f} ± {std:.2f}"
            cells.append(f"[bold]{text}[/bold]" if mean == board.best(row.labels, metric) else text)
        table.add_row(*cells)
        previous = row.labels
    return table


def _footnote(board: Board) -> str | None:
    if not board.not_ok:
        return None
    parts = [f"{count} {status}" for status, count in sorted(board.not_ok.items())]
    return f"Not shown: {', '.join(parts)} run(s); see `lmbench leaderboard --failures`."

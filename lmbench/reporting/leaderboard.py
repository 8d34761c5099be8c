"""Leaderboards shaped like the paper's Tables 1-3: one table per dataset, rows grouped by
number of labels, MRE then SDR at the dataset's thresholds, mean ± std over seeds (or a
bootstrap confidence interval), in bold the best of each label count and every method not
significantly worse than it on the same test images, and each method's average MRE rank
across label counts."""

from __future__ import annotations

import difflib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.markup import escape
from rich.table import Table

from lmbench.core.errors import LmbenchError
from lmbench.core.keys import content_key
from lmbench.evaluate.metrics import sdr_name
from lmbench.reporting import stats
from lmbench.store import results

#: columns shown when asked for (``--metrics``): each landmark's conformal region, fixed and adaptive
UNCERTAINTY = ("coverage", "radius", "coverage_adaptive", "radius_adaptive")
#: filter name -> the run row columns it matches (a plugin's label or its name)
FILTER_COLUMNS = {
    "dataset": ("dataset_label", "dataset"), "pretrainer": ("pretrainer_label", "pretrainer"),
    "backbone": ("backbone_label", "backbone"), "head": ("head_label", "head"),
    "labels": ("labels",), "matrix": ("matrix",), "selection": ("selection",), "seed": ("seed",),
}


@dataclass
class Row:
    labels: int
    method: tuple[str, ...]  # (pretrainer, head) and the backbone when a dataset has several
    seeds: int
    values: dict[str, tuple[float, float | None]]  # metric -> (mean, std) over seeds
    source: str = "lmbench"  # or the published table a reference row comes from
    rank: float | None = None  # the method's MRE rank, averaged over label counts
    images: list[str] = field(default_factory=list)  # test images every seed was scored on
    per_image: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (seeds, images), native only
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> bootstrap interval
    pvalues: dict[str, float] = field(default_factory=dict)  # metric -> Holm-adjusted p of "worse than the best"
    landmarks: dict[str, float] = field(default_factory=dict)  # landmark -> MRE, mean over seeds
    flagged: int = 0  # of its runs, those whose health verdict found a problem
    problems: list[str] = field(default_factory=list)  # what those verdicts found, each once

    @property
    def health(self) -> str:
        return "; ".join(self.problems) + f" ({self.flagged} of {self.seeds} runs)" if self.problems else "ok"


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
    confidence: float = 0.95  # of the bootstrap intervals
    significance: float = 0.05  # level of the paired tests against the best; 0: no tests
    ci: str = "std"  # what follows a mean: "std" over seeds, the "interval" or its "half-width"
    generated: bool = False  # the runs' images are generated (the synthetic dataset), not x-rays

    def best(self, labels: int, metric: str) -> float | None:
        """The best mean of ``metric`` among lmbench's rows with ``labels`` labels; None for a
        coverage, which is right at its level rather than best when highest."""
        means = [r.values[metric][0] for r in self.rows
                 if r.labels == labels and metric in r.values and r.source == "lmbench"]
        if not means or metric.startswith("coverage"):
            return None
        return min(means) if lower_is_better(metric) else max(means)

    @property
    def has_reference(self) -> bool:
        return any(r.source != "lmbench" for r in self.rows)

    @property
    def tested(self) -> bool:
        """Whether paired tests ran: they need the per-image errors of native evaluation."""
        return self.significance > 0 and any(r.pvalues for r in self.rows)

    def bold(self, row: Row, metric: str) -> bool:
        """Best of its label count, or not significantly worse than the best."""
        if row.source != "lmbench" or metric not in row.values:
            return False
        if row.values[metric][0] == self.best(row.labels, metric):
            return True
        return row.pvalues.get(metric, 0.0) > self.significance

    def title(self) -> str:
        split = "validation" if self.split == "val" else self.split
        spread = {"std": "mean ± std over seeds", "interval": f"mean [{self.confidence:.0%} CI]",
                  "half-width": f"mean ± {self.confidence:.0%} CI half-width"}[self.ci]
        return f"{self.dataset}: {split} set, {self.eval_mode} evaluation ({spread})"

    def legend(self) -> str:
        """What bold and the intervals mean."""
        if self.tested:
            bold = (f"Bold: the best mean of each label count and every method not significantly worse on the "
                    f"same test images (one-sided Wilcoxon signed-rank on per-image values averaged over seeds, "
                    f"Holm-corrected over each column, level {self.significance:g}).")
        else:
            bold = "Bold: the best mean of each label count (no paired test: " + (
                "switched off)." if self.significance <= 0 else "they need native evaluation and stored predictions).")
        if self.ci == "std":
            return bold
        return bold + (f" Intervals: {self.confidence:.0%} percentile bootstrap over seeds, then test images "
                       f"({stats.BOOTSTRAP_RESAMPLES} resamples, seed {stats.BOOTSTRAP_SEED}); native evaluation only.")


def matches(run: dict, filters: dict[str, list]) -> bool:
    """Whether a run row (or reference row) passes every filter: any listed value matches."""
    for key, wanted in filters.items():
        if not wanted:
            continue
        values = {str(run.get(column)) for column in FILTER_COLUMNS[key] if run.get(column) is not None}
        if not values & {str(w) for w in wanted}:
            return False
    return True


def _stored_metrics(run: dict) -> set[str]:
    """The names of the metrics a run stored (runs from before a metric existed lack it)."""
    table = results.read_table("metrics", run["_file"])
    return set(table.column("metric").to_pylist()) if table is not None else set()


def _check_metrics(asked: list[str], known: list[str], dataset: str) -> None:
    """Every metric asked for is one the dataset's runs have, or an error listing those."""
    for metric in asked:
        if metric not in known:
            close = difflib.get_close_matches(metric, known, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise LmbenchError(f"--metrics: {metric!r} is not a metric of {dataset}'s runs{hint}; they have "
                               f"{', '.join(known)}")


def build_boards(roots: Iterable[Path], eval_mode: str = "native", filters: dict[str, list] | None = None,
                 metrics: list[str] | None = None, reference: list[dict] | None = None,
                 split: str = "test", confidence: float = 0.95, significance: float = 0.05,
                 ci: str = "std", uncertainty: bool = False) -> list[Board]:
    """Aggregate the runs under ``roots`` (deduplicated on run_key) into one board per dataset.

    ``metrics`` picks columns ("mre", "sdr@2", ...); ``reference`` rows (published numbers,
    test-set numbers) join the boards of their dataset, marked with their source.
    ``confidence`` sets the bootstrap intervals, ``significance`` the paired tests' level;
    ``uncertainty`` adds the coverage and radius columns where the runs stored them.
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
        available = ["mre"] + [sdr_name(t) for t in thresholds]  # the paper's columns, shown by default
        if metrics and ok:
            _check_metrics(metrics, available + list(UNCERTAINTY)
                           + sorted(m for m in _stored_metrics(ok[0]) if m.startswith("failure@")), dataset)
        available += [m for m in metrics or [] if m in UNCERTAINTY or m.startswith("failure@")]
        if uncertainty and metrics is None and ok and split == "test" and "coverage" in _stored_metrics(ok[0]):
            available += ["coverage", "radius"]
        multiple_backbones = len({r["backbone_label"] for r in ok}) > 1
        board = Board(
            dataset=dataset,
            unit=ok[0]["unit"] if ok else "?",
            eval_mode=eval_mode,
            metrics=[m for m in available if metrics is None or m in metrics],
            method_columns=["Pre-training", "Head"] + (["Backbone"] if multiple_backbones else []),
            not_ok=Counter(r["status"] for r in dataset_runs if r["status"] != "ok"),
            split=split, confidence=confidence, significance=significance,
            ci=ci if eval_mode == "native" else "std",  # intervals need the per-image errors of native evaluation
            generated=bool(ok) and all(r["dataset"] == "synthetic" for r in ok),
        )
        board.rows = _rows(ok, eval_mode, board.metrics, multiple_backbones, split)
        _rank(board)
        _intervals_and_tests(board)
        if reference and ok:
            names = {r["dataset"] for r in ok}
            board.rows += _reference_rows(
                [r for r in reference if r["dataset"] in names and matches(r, filters)], board, multiple_backbones)
            board.rows.sort(key=lambda r: (r.labels, r.source != "lmbench"))
        boards.append(board)
    return boards


def _rows(ok: list[dict], eval_mode: str, metrics: list[str], multiple_backbones: bool, split: str) -> list[Row]:
    configs = defaultdict(set)  # method -> configurations run under that name
    latest = {}  # one run per configuration, label count and seed: the latest finished
    for run in sorted(ok, key=lambda r: r["finished_at"] or ""):
        latest[(_config(run), method_of(run, True), run["labels"], run["seed"])] = run
    for run in latest.values():
        configs[method_of(run, multiple_backbones)].add(_config(run))
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for run in latest.values():
        method = method_of(run, multiple_backbones)
        if len(configs[method]) > 1:  # same labels, other settings: never pooled
            method = (f"{method[0]} [{_config(run)}]", *method[1:])
        grouped[(run["labels"], method)].append(run)
    rows = []
    for (labels, method), group in sorted(grouped.items()):
        row = _row(labels, method, group, eval_mode, metrics, split)
        if row.values:
            rows.append(row)
    return rows


def _row(labels: int, method: tuple[str, ...], runs: list[dict], eval_mode: str, metrics: list[str], split: str) -> Row:
    """One method at one label count: means and spreads over its seeds, per-landmark MRE, and
    (native evaluation) each seed's per-image values on the test images all seeds share."""
    values, landmarks, per_seed = defaultdict(list), defaultdict(list), []
    for run in runs:
        table = results.read_table("metrics", run["_file"], split=split)
        for m in table.to_pylist() if table is not None else []:
            if m["eval_mode"] != eval_mode:
                continue
            if m["landmark"] == "all":
                values[m["metric"]].append(m["value"])
            elif m["metric"] == "mre":
                landmarks[m["landmark"]].append(m["value"])
        predictions = results.read_table("predictions", run["_file"], split=split) if eval_mode == "native" else None
        if predictions is not None and predictions.num_rows:
            ids = np.asarray(predictions.column("image_id").to_pylist())
            columns = {name: predictions.column(name).to_numpy(zero_copy_only=False).astype(float)
                       for name in ("error", "radius", "radius_adaptive")}
            usable = [m for m in metrics if m in values]  # a run from before a metric existed has none
            per_seed.append({m: stats.per_image(ids, stats.point_values(columns, m)) for m in usable})
    verdicts = [run.get("health") for run in runs if run.get("health") not in (None, "ok")]
    row = Row(labels, method, max((len(v) for v in values.values()), default=0),
              {k: (float(np.mean(v)), float(np.std(v))) for k, v in values.items() if k in metrics},
              landmarks={k: float(np.mean(v)) for k, v in landmarks.items()}, flagged=len(verdicts),
              problems=list(dict.fromkeys(problem for v in verdicts for problem in v.split("; "))))
    if per_seed and metrics and len(per_seed) == row.seeds:
        row.images = sorted(set.intersection(*(set(next(iter(seed.values()), {})) for seed in per_seed)))
        row.per_image = {metric: np.array([[seed[metric][i] for i in row.images] for seed in per_seed])
                         for metric in metrics if all(metric in seed for seed in per_seed)}
    return row


def _intervals_and_tests(board: Board) -> None:
    """Bootstrap intervals for every mean with per-image values, and for each metric column the
    paired test of every method against the best of its label count, Holm-corrected together."""
    for row in board.rows:
        for metric, values in row.per_image.items():
            if values.size:
                row.intervals[metric] = stats.bootstrap_interval(values, board.confidence)
    if board.significance <= 0:
        return
    for metric in board.metrics:
        compared, pvalues = [], []
        for labels in sorted({r.labels for r in board.rows}):
            group = [r for r in board.rows if r.labels == labels and metric in r.per_image]
            best = next((r for r in group if r.values[metric][0] == board.best(labels, metric)), None)
            for row in group if best is not None else []:
                shared = sorted(set(row.images) & set(best.images))
                if row is best or len(shared) < 2:
                    continue
                candidate, reference = (r.per_image[metric][:, [r.images.index(i) for i in shared]].mean(axis=0)
                                        for r in (row, best))
                compared.append(row)
                pvalues.append(stats.worse_pvalue(candidate, reference, lower_is_better=lower_is_better(metric)))
        for row, p in zip(compared, stats.holm(pvalues)):
            row.pvalues[metric] = p


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
                 "selection", "selection_params", "image_size")


def method_of(run: dict, with_backbone: bool) -> tuple[str, ...]:
    """A run's row name: (pre-training, head) and the backbone where asked."""
    pretraining = run["pretrainer_label"] + (f" (trained on {run['joint']})" if run.get("joint") else "")
    if run.get("selection") not in (None, "first"):  # the paper's first N go unsaid
        pretraining += f" ({run['selection']} labels)"
    return (pretraining, run["head_label"]) + ((run["backbone_label"],) if with_backbone else ())


def _config(run: dict) -> str:
    """A short id of everything but the seed and label count that the run's numbers depend on."""
    values = {k: run[k] for k in CONFIG_FIELDS}
    values["selection_params"] = values["selection_params"] or "{}"  # rows from before selectors had params
    return content_key(values, length=6)


def lower_is_better(metric: str) -> bool:
    return metric == "mre" or metric.startswith(("radius", "failure@"))


def header(metric: str, unit: str) -> str:
    if metric == "mre":
        return f"MRE ↓ ({unit})"
    if metric.startswith("failure@"):
        return f"Fail >{metric.split('@')[1]}{unit} ↓ (%)"
    adaptive = " adaptive" if metric.endswith("_adaptive") else ""
    if metric.startswith("coverage"):
        return f"Coverage{adaptive} (%)"
    if metric.startswith("radius"):
        return f"Radius{adaptive} ↓ ({unit})"
    return f"SDR {metric.split('@')[1]}{unit} ↑ (%)"


def cell_text(row: Row, metric: str, ci: str = "std") -> str:
    """"mean ± std", the mean and its interval (``ci``), or the mean alone where there is no
    spread to show (one seed and no interval, or none given)."""
    if metric not in row.values:
        return "-"
    mean, std = row.values[metric]
    if ci != "std" and metric in row.intervals:
        low, high = row.intervals[metric]
        return f"{mean:.2f} [{low:.2f}, {high:.2f}]" if ci == "interval" else f"{mean:.2f} ± {(high - low) / 2:.2f}"
    return f"{mean:.2f}" if std is None or row.seeds < 2 else f"{mean:.2f} ± {std:.2f}"


def right_aligned(index: int, name: str) -> bool:
    """Numbers align right in every format: the label count, metrics, seeds and rank."""
    return index == 0 or "↓" in name or "↑" in name or name.startswith("Coverage") or name in ("Seeds", "Avg rank")


def columns(board: Board) -> list[str]:
    """The column headers every format shares."""
    source = ["Source"] if board.has_reference else []
    return ["Labels", *board.method_columns, *source, "Seeds", *(header(m, board.unit) for m in board.metrics), "Avg rank"]


HEALTH_MARK = "†"


def flagged_rows(board: Board) -> list[Row]:
    """The rows with a run whose health verdict found a problem, numbered in this order."""
    return [row for row in board.rows if row.problems]


def cells(board: Board, row: Row) -> list[tuple[str, bool]]:
    """One row's cells as (text, bold), in ``columns`` order; a flagged row's method carries
    its mark, which the legend explains."""
    source = [(row.source, False)] if board.has_reference else []
    method = list(row.method)
    if row.problems:
        method[0] += f" {HEALTH_MARK}{flagged_rows(board).index(row) + 1}"
    out = [(str(row.labels), False), *((m, False) for m in method), *source, (str(row.seeds), False)]
    for metric in board.metrics:
        out.append((cell_text(row, metric, board.ci), board.bold(row, metric)))
    out.append((f"{row.rank:.1f}" if row.rank is not None else "-", False))
    return out


def health_legend(board: Board) -> list[str]:
    """One line per flagged row: its mark, method, label count and what its verdicts found."""
    return [f"{HEALTH_MARK}{i} {' / '.join(row.method)}, {row.labels} labels: {row.health}"
            for i, row in enumerate(flagged_rows(board), start=1)]


SYNTHETIC_NOTE = ("Generated images: this table checks that the machinery runs end to end, and says nothing about "
                  "which pre-training is better; compare on real x-rays (`lmbench data fetch isbi2015 --to data/isbi2015`, "
                  "then `lmbench run --matrix matrices/isbi2015-quick.toml --data-root data`).")


def footnote(board: Board) -> str:
    """The legend, then the flagged rows' problems, then what is not shown."""
    text = board.legend() + (f"\n{SYNTHETIC_NOTE}" if board.generated else "")
    if flagged_rows(board):
        text += (f" {HEALTH_MARK}: the health verdict of a run of the row found a problem (`lmbench leaderboard "
                 f"--failures` lists the runs):\n" + "\n".join(health_legend(board)))
    if board.not_ok:
        parts = [f"{count} {status}" for status, count in sorted(board.not_ok.items())]
        text += f"\nNot shown: {', '.join(parts)} run(s); see `lmbench leaderboard --failures`."
    return text


def render_rich(board: Board) -> Table:
    table = Table(title=board.title(), caption=footnote(board), caption_justify="left")
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

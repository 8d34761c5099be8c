"""``lmbench report``: the figures a paper needs, and an index.md tying them to the tables.

Per dataset: MRE against the number of labels per method (bars with the spread over seeds,
as the paper's supplementary charts), SDR at each threshold, the pre-training-iterations
sweep (the paper's Figure 2) when the results hold one, prediction overlays on a few
test images at one label count (the paper's Figure 3), fine-tuning curves, the reliability
of the uncertainty regions, and MRE per landmark and method; across datasets and label counts, mean ranks with a critical-difference
diagram. Figures come from the results files alone, except the overlays, which reload the
test images through the dataset plugin and are left out, with the reason in the index,
where the data is not at hand.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lmbench.reporting import comparisons, curves, health, reliability  # noqa: E402
from lmbench.reporting.formats import md_text, to_markdown  # noqa: E402
from lmbench.reporting.html import write_html  # noqa: E402
from lmbench.reporting.leaderboard import Board, build_boards, header, matches  # noqa: E402
from lmbench.store import integrity, results  # noqa: E402

DPI = 100
OVERLAY_IMAGES = 3


def _slug(text: str) -> str:
    """A file-name part: "ceph (2 annotators)" -> "ceph-2-annotators"."""
    return "-".join("".join(ch if ch.isalnum() else " " for ch in text).split()).lower()


def _methods(board: Board) -> list[tuple[str, ...]]:
    return sorted({row.method for row in board.rows if row.source == "lmbench"})


def _label(method: tuple[str, ...]) -> str:
    return " / ".join(method)


def _series(board: Board, method: tuple[str, ...], metric: str, labels: list[int]) -> tuple[list[int], list[float], list[float]]:
    """Positions of ``labels`` where ``method`` has ``metric``, its means, and its spread over
    seeds (0 for a single seed)."""
    rows = {r.labels: r for r in board.rows if r.method == method and r.source == "lmbench" and metric in r.values}
    present = [j for j, n in enumerate(labels) if n in rows]
    means = [rows[labels[j]].values[metric][0] for j in present]
    spreads = [rows[labels[j]].values[metric][1] if rows[labels[j]].seeds > 1 else 0.0 for j in present]
    return present, means, spreads


def plot_mre(board: Board, path: Path) -> None:
    """Grouped bars: one group per label count, one bar per method, error bars = std over seeds."""
    methods, labels = _methods(board), sorted({r.labels for r in board.rows})
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(labels) * max(1, len(methods)) / 3), 5), dpi=DPI)
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        present, means, spreads = _series(board, method, "mre", labels)
        x = [j + (i - (len(methods) - 1) / 2) * width for j in present]
        ax.bar(x, means, width, yerr=spreads, capsize=2, label=_label(method))
    ax.set_xticks(range(len(labels)), [str(n) for n in labels])
    ax.set_xlabel("labelled training images")
    ax.set_ylabel(header("mre", board.unit))
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_title(f"{board.dataset}: MRE by number of labels ({board.eval_mode} evaluation)")
    fig.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, 0))  # below the plot, in the saved canvas
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot_sdr(board: Board, path: Path) -> None:
    """One panel per SDR threshold: SDR against the number of labels, a line per method."""
    thresholds = [m for m in board.metrics if m.startswith("sdr@")]
    methods, labels = _methods(board), sorted({r.labels for r in board.rows})
    fig, axes = plt.subplots(1, max(1, len(thresholds)), figsize=(max(7, 3.2 * len(thresholds)), 4.4),
                             dpi=DPI, sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], thresholds):
        for method in methods:
            present, means, spreads = _series(board, method, metric, labels)
            ax.errorbar(present, means, yerr=spreads, marker="o", capsize=2, label=_label(method))
        ax.set_xticks(range(len(labels)), [str(n) for n in labels])
        ax.set_title(header(metric, board.unit), fontsize=9)
        ax.set_xlabel("labels")
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("SDR (%)")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, 0))
    fig.suptitle(f"{board.dataset}: success detection rate ({board.eval_mode} evaluation)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def sweep_points(runs: list[dict], eval_mode: str) -> dict[tuple[str, int], list[tuple[int, float]]]:
    """(pretrainer, labels) -> [(iterations, mean validation MRE over seeds)] for pretrainers
    whose runs differ only in their ``iterations`` param: a checkpoint sweep. Read on the
    validation split, where the paper picks its checkpoint, never on the test split."""
    groups = defaultdict(lambda: defaultdict(list))
    for run in runs:
        params = json.loads(run["pretrainer_params"])
        if "iterations" not in params:
            continue
        rest = json.dumps({k: v for k, v in params.items() if k != "iterations"}, sort_keys=True)
        mre = results.overall(run["_file"], "val", eval_mode)
        if mre is not None:
            key = (run["pretrainer"], rest, run["head_label"], run["labels"])
            groups[key][params["iterations"]].append(mre)
    return {(f"{pretrainer} / {head}", labels): sorted((it, float(np.mean(v))) for it, v in by_it.items())
            for (pretrainer, _, head, labels), by_it in groups.items() if len(by_it) > 1}


def plot_sweep(points: dict, dataset: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=DPI)
    for (method, labels), series in sorted(points.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        ax.plot([it for it, _ in series], [v for _, v in series], marker="o", label=f"{method}, {labels} labels")
    ax.set_xlabel("pre-training iterations (optimiser steps)")
    ax.set_ylabel("validation MRE")
    ax.set_title(f"{dataset}: validation MRE by pre-training checkpoint")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot_overlays(runs: list[dict], labels: int, path: Path) -> str | None:
    """Image, ground truth (green) and prediction (red) for the first test images, one column per
    method at ``labels`` labels. Returns why it could not be drawn, or None."""
    from lmbench.config.specs import ComponentSpec  # the dataset plugin reloads the images

    chosen = {}
    for run in sorted(runs, key=lambda r: (r["seed"], r["finished_at"] or "")):
        if run["labels"] == labels:
            selection = "" if run.get("selection") in (None, "first") else f" / {run['selection']}"
            chosen.setdefault(f"{run['pretrainer_label']} / {run['head_label']} / {run['backbone_label']}{selection}", run)
    if not chosen:
        return f"no runs with {labels} labels"
    first = next(iter(chosen.values()))
    try:
        spec = ComponentSpec("dataset", first["dataset"], first["dataset_label"], json.loads(first["dataset_params"]), {})
        dataset = spec.instantiate()
    except Exception as exc:  # data not at hand here: the index says so
        return f"the {first['dataset_label']} images could not be loaded ({exc})"
    predictions = {name: results.read_table("predictions", run["_file"], split="test")
                   for name, run in chosen.items()}
    ids = sorted({row["image_id"] for table in predictions.values() if table is not None
                  for row in table.to_pylist()})[:OVERLAY_IMAGES]
    if not ids:
        return "the runs have no stored predictions"
    fig, axes = plt.subplots(len(ids), len(chosen), figsize=(2.4 * len(chosen), 2.6 * len(ids)), dpi=DPI, squeeze=False)
    for i, image_id in enumerate(ids):
        sample = dataset.load(image_id)
        for j, (name, table) in enumerate(predictions.items()):
            ax = axes[i][j]
            ax.imshow(sample.image, cmap="gray")
            rows = [r for r in (table.to_pylist() if table is not None else []) if r["image_id"] == image_id]
            ax.scatter([r["x_true"] for r in rows], [r["y_true"] for r in rows], s=6, c="lime", label="ground truth")
            ax.scatter([r["x"] for r in rows], [r["y"] for r in rows], s=6, c="red", marker="x", label="prediction")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=7)
            if j == 0:
                ax.set_ylabel(image_id, fontsize=7)
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"{first['dataset_label']}: predictions with {labels} labels", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return None


def write_report(roots: list[Path], out: Path, eval_mode: str = "native", filters: dict | None = None,
                 overlay_labels: int | None = None, reference: list[dict] | None = None) -> list[Path]:
    """Write the figures, index.md and index.html under ``out``; return the figure paths.
    ``reference``: published rows shown in the leaderboards beside ours."""
    out.mkdir(parents=True, exist_ok=True)
    filters = filters or {}
    boards = build_boards(roots, eval_mode, filters, reference=reference, uncertainty=eval_mode == "native")
    runs = [r for r in results.read_runs(roots) if r["status"] == "ok" and matches(r, filters)]
    figures: list[Path] = []
    title = f"lmbench report: {', '.join(map(str, roots))}"
    index: list[str | Board] = [f"{len(runs)} finished runs, {eval_mode} evaluation.", ""]
    for board in boards:
        slug = _slug(board.dataset)
        board_runs = [r for r in runs if r["dataset_label"] == board.dataset]
        index += [f"## {md_text(board.dataset)}", "", board, ""]
        if not board.rows:
            continue
        mre, sdr = out / f"{slug}-mre.png", out / f"{slug}-sdr.png"
        plot_mre(board, mre)
        plot_sdr(board, sdr)
        figures += [mre, sdr]
        index += [f"![MRE by number of labels]({mre.name})", "",
                  "Mean radial error (log scale) per method and number of labelled images; error bars: "
                  "standard deviation over seeds.", "",
                  f"![SDR by number of labels]({sdr.name})", "",
                  "Success detection rate at each threshold against the number of labelled images.", ""]
        points = sweep_points(board_runs, eval_mode)
        if points:
            sweep = out / f"{slug}-sweep.png"
            plot_sweep(points, board.dataset, sweep)
            figures.append(sweep)
            index += [f"![pre-training sweep]({sweep.name})", "",
                      "Validation MRE against the pre-training checkpoint the detector started from (the paper's "
                      "Figure 2, which picks each dataset's checkpoint on its validation set).", ""]
        counts = sorted({r["labels"] for r in board_runs})
        labels = overlay_labels if overlay_labels in counts else (10 if 10 in counts else counts[0])
        overlay = out / f"{slug}-overlays-{labels}.png"
        why_not = plot_overlays(board_runs, labels, overlay)
        if why_not is None:
            figures.append(overlay)
            index += [f"![predictions with {labels} labels]({overlay.name})", "",
                      f"Ground truth (green) and predictions (red) on the first test images, one column per "
                      f"method, with {labels} labelled images (the paper's Figure 3).", ""]
        else:
            index += [f"Prediction overlays left out: {md_text(why_not)}.", ""]
        for name, data, plot, alt, caption in (
            ("curves", curves.read_curves(board_runs), curves.plot_curves, "fine-tuning curves",
             "Training and validation loss per fine-tuning epoch, and the learning rate the plateau schedule set, "
             "for each method and label count (every seed drawn)."),
            ("reliability", reliability.reliability_curves(board_runs), reliability.plot_reliability,
             "reliability of the uncertainty regions",
             "Observed test coverage of each landmark's conformal region against the level it was calibrated for "
             "on the validation split (solid: adaptive regions, scaled by the heatmap's spread; dashed: one radius "
             "per landmark), averaged over seeds. A calibrated method lies on or just above the diagonal."),
        ):
            if data:
                figure = out / f"{slug}-{name}.png"
                plot(data, board.dataset, figure)
                figures.append(figure)
                index += [f"![{alt}]({figure.name})", "", caption, ""]
        if any(r.landmarks for r in board.rows):
            heatmap = out / f"{slug}-landmarks.png"
            comparisons.plot_landmark_heatmap(board, heatmap)
            figures.append(heatmap)
            index += [f"![MRE per landmark]({heatmap.name})", "",
                      "MRE of each landmark (rows) by each method (columns), one panel per label count: which "
                      "landmarks each method gets wrong.", ""]
            for labels in sorted({r.labels for r in board.rows if r.landmarks}):
                index += [f"Per-landmark MRE ({board.unit}) with {labels} labels, the lowest in bold:", "",
                          comparisons.landmark_markdown(board, labels), ""]
    ranking = comparisons.rank_methods(boards)
    if ranking is not None:
        index += ["## Ranks across datasets and label counts", "",
                  f"MRE rank of each method (1 = best) averaged over {ranking.blocks} blocks (dataset x label "
                  "count) holding every method; intervals: 95% bootstrap over blocks.", "",
                  comparisons.ranking_markdown(ranking), ""]
        if ranking.critical_difference is not None:
            diagram = out / "critical-difference.png"
            comparisons.plot_critical_difference(ranking, diagram)
            figures.append(diagram)
            index += [f"![critical-difference diagram]({diagram.name})", "",
                      f"Friedman test over the blocks: p = {ranking.pvalue:.3g}. Methods joined by a red bar differ "
                      f"in mean rank by less than the Nemenyi critical difference ({ranking.critical_difference:.2f} "
                      f"at {ranking.alpha:g}): the data cannot tell them apart (Demšar, JMLR 2006).", ""]
    index += _health_section(runs, out, figures)
    markdown = [to_markdown([item]).strip() if isinstance(item, Board) else item for item in index]
    integrity.write_text(out / "index.md", "\n".join([f"# {md_text(title)}", "", *markdown]))
    write_html(index, out, title, {figure.name for figure in figures})
    return figures


def _health_section(runs: list[dict], out: Path, figures: list[Path]) -> list[str]:
    """Whether every run trained: pre-training curves against chance, the measures of each
    pre-training's verdict, and the flagged runs."""
    lines = ["## Training health", "",
             "Every run's verdict (`health` in its run row): whether pre-training left chance, whether what it "
             "handed on is less spread than its initialisation (lightly's std_of_l2_normalized of pooled features "
             "over the pool images, batch norm calibrated on them), DDPM's denoising loss on unseen test images "
             "against predicting zero, and whether fine-tuning stopped while still improving or predicted one "
             "point for a landmark on every test image. Thresholds: the matrix's `[health]` table.", ""]
    pretrain = health.pretrain_curves(runs)
    if pretrain:
        figure = out / "pretraining-curves.png"
        health.plot_pretrain_curves(pretrain, figure)
        figures.append(figure)
        lines += [f"![pre-training curves]({figure.name})", "",
                  "Pre-training loss per iteration; the dashed line is chance, the loss of a model that learned "
                  "nothing.", ""]
    table = health.measures_markdown(runs)
    if table:
        lines += ["Pre-trainings: the first step's loss, the mean loss over the curve's last tenth, chance, "
                  "and what the verdict probed.", "", table, ""]
    flagged = health.flagged_markdown(runs)
    lines += (["Flagged runs:", "", flagged, ""] if flagged else ["No run was flagged.", ""])
    return lines

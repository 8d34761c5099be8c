"""The report's comparisons across the whole results: ranks over datasets and label counts with
a critical-difference diagram, and which landmarks each method gets wrong."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from lmbench.reporting.formats import md_text  # noqa: E402
from lmbench.reporting.leaderboard import Board  # noqa: E402
from lmbench.reporting.stats import Ranking, friedman_ranks  # noqa: E402

DPI = 100


def method_name(method: tuple[str, ...]) -> str:
    return " / ".join(method)


def rank_methods(boards: list[Board], alpha: float = 0.05) -> Ranking | None:
    """Mean MRE ranks over every (dataset, label count) block, for the methods present in all of
    them; None with fewer than two blocks or two such methods."""
    blocks: dict[tuple[str, int], dict[str, float]] = {}
    for board in boards:
        for row in board.rows:
            if row.source == "lmbench" and "mre" in row.values:
                blocks.setdefault((board.dataset, row.labels), {})[method_name(row.method)] = row.values["mre"][0]
    if len(blocks) < 2:
        return None
    methods = sorted(set.intersection(*(set(block) for block in blocks.values())))
    if len(methods) < 2:
        return None
    table = np.array([[block[m] for m in methods] for block in blocks.values()])
    return friedman_ranks(table, methods, alpha)


def _cliques(ranks: list[float], cd: float) -> list[tuple[int, int]]:
    """Maximal runs [i, j] of rank-sorted methods whose extreme ranks differ by less than ``cd``."""
    runs = []
    for i in range(len(ranks)):
        j = max(j for j in range(i, len(ranks)) if ranks[j] - ranks[i] < cd)
        if j > i and not any(a <= i and j <= b for a, b in runs):
            runs.append((i, j))
    return runs


def plot_critical_difference(ranking: Ranking, path: Path) -> None:
    """Demšar's diagram: methods on an axis of mean rank (1 = best, left), each with its bootstrap
    rank interval; thick bars join methods the Nemenyi test cannot tell apart."""
    order = np.argsort(ranking.mean_ranks)
    ranks = [ranking.mean_ranks[i] for i in order]
    names = [ranking.methods[i] for i in order]
    k = len(names)
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.32 * k), dpi=DPI)
    ax.set_xlim(0.5, k + 0.5)
    cliques = _cliques(ranks, ranking.critical_difference) if ranking.critical_difference is not None else []
    ax.set_ylim(-(k + 1.5 + 0.45 * len(cliques)), 2.2)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black")
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.25, color="black")
        ax.text(r, 0.45, str(r), ha="center", fontsize=8)
    for position, (rank, name, i) in enumerate(zip(ranks, names, order)):
        low, high = ranking.rank_intervals[i]
        y = -(position + 1)
        ax.plot([low, high], [y + 0.3] * 2, color="0.6", linewidth=1)
        ax.vlines(rank, y, 0, color="0.3", linewidth=0.8)
        ax.plot([rank], [y], "o", color="black", markersize=3)
        right = rank > (k + 1) / 2  # labels point inwards, so that none leaves the figure
        ax.text(rank + (-0.08 if right else 0.08), y - 0.1, f"{name} ({rank:.2f})", fontsize=7, va="top",
                ha="right" if right else "left")
    if ranking.critical_difference is not None:
        cd = ranking.critical_difference
        ax.plot([1, 1 + cd], [1.4, 1.4], color="black", linewidth=2)
        ax.text(1 + cd / 2, 1.6, f"CD = {cd:.2f}", ha="center", fontsize=8)
        for line, (a, b) in enumerate(cliques):
            ax.plot([ranks[a] - 0.03, ranks[b] + 0.03], [-(k + 0.8 + 0.45 * line)] * 2, color="tab:red", linewidth=3)
    friedman = "" if ranking.pvalue is None else f", Friedman p = {ranking.pvalue:.2g}"
    ax.set_title(f"Mean MRE rank over {ranking.blocks} dataset x label-count blocks{friedman}\n"
                 f"red bars: not significantly different (Nemenyi, {ranking.alpha:g}); grey: rank intervals", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def ranking_markdown(ranking: Ranking) -> str:
    lines = ["| Method | Mean rank | Rank interval |", "|---|---:|---:|"]
    for i in np.argsort(ranking.mean_ranks):
        low, high = ranking.rank_intervals[i]
        lines.append(f"| {md_text(ranking.methods[i])} | {ranking.mean_ranks[i]:.2f} | {low:.2f} to {high:.2f} |")
    return "\n".join(lines)


def landmark_table(board: Board, labels: int) -> tuple[list[str], list[str], np.ndarray]:
    """(landmarks, methods, MRE of each landmark by each method) at ``labels`` labels."""
    rows = [r for r in board.rows if r.source == "lmbench" and r.labels == labels and r.landmarks]
    landmarks = list(dict.fromkeys(name for r in rows for name in r.landmarks))
    values = np.array([[r.landmarks.get(name, np.nan) for r in rows] for name in landmarks])
    return landmarks, [method_name(r.method) for r in rows], values


def landmark_markdown(board: Board, labels: int) -> str:
    """Per-landmark MRE, the lowest of each landmark in bold."""
    landmarks, methods, values = landmark_table(board, labels)
    lines = ["| Landmark | " + " | ".join(md_text(m) for m in methods) + " |", "|---|" + "---:|" * len(methods)]
    for name, row in zip(landmarks, values):
        best = np.nanmin(row)
        lines.append(f"| {md_text(name)} | " + " | ".join(f"**{v:.2f}**" if v == best else f"{v:.2f}" for v in row) + " |")
    return "\n".join(lines)


def plot_landmark_heatmap(board: Board, path: Path) -> None:
    """Landmark x method MRE, one panel per label count, on one logarithmic colour scale."""
    counts = sorted({r.labels for r in board.rows if r.source == "lmbench" and r.landmarks})
    tables = [landmark_table(board, n) for n in counts]
    finite = np.concatenate([t[2][np.isfinite(t[2])].ravel() for t in tables])
    norm = matplotlib.colors.LogNorm(max(finite.min(), 1e-3), max(finite.max(), 1e-3 * 1.01))
    n_landmarks = max(len(t[0]) for t in tables)
    n_methods = max(len(t[1]) for t in tables)
    fig, axes = plt.subplots(1, len(counts), figsize=(1.2 + 0.5 * n_methods * len(counts) + 1.5, 1.8 + 0.28 * n_landmarks),
                             dpi=DPI, squeeze=False, sharey=True)
    for ax, labels, (landmarks, methods, values) in zip(axes[0], counts, tables):
        image = ax.imshow(values, cmap="magma_r", norm=norm, aspect="auto")
        ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=6)
        ax.set_yticks(range(len(landmarks)), landmarks, fontsize=6)
        ax.set_title(f"{labels} label{'s' if labels > 1 else ''}", fontsize=8)
        if values.size <= 400:
            for (i, j), v in np.ndenumerate(values):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=5,
                            color="white" if norm(v) > 0.6 else "black")
    bar = fig.colorbar(image, ax=axes[0].tolist(), label=f"MRE ({board.unit})", shrink=0.8)
    bar.ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    bar.ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    fig.suptitle(f"{board.dataset}: MRE per landmark ({board.eval_mode} evaluation)", fontsize=10)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)

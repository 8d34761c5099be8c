"""Whether each method's uncertainty regions mean what they say: the reliability figure.

For every run, the conformal regions are calibrated again on its stored validation
predictions at a range of nominal levels and tested on its test predictions; a calibrated
method follows the diagonal (at or just above it), whatever its accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from lmbench.evaluate import conformal
from lmbench.reporting.leaderboard import method_of
from lmbench.store import results

LEVELS = np.round(np.arange(0.5, 0.96, 0.05), 2)


def _matrices(run: dict, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(M, N) errors and spreads of one split of a run, or None where it stored no spreads."""
    table = results.read_table("predictions", run["_file"], split=split)
    if table is None or not table.num_rows or table.column("spread").null_count:
        return None
    rows = sorted(table.select(["image_id", "landmark_index", "error", "spread"]).to_pylist(),
                  key=lambda r: (r["image_id"], r["landmark_index"]))
    landmarks = max(r["landmark_index"] for r in rows) + 1
    values = np.array([[r["error"], r["spread"]] for r in rows]).reshape(-1, landmarks, 2)
    return values[..., 0], values[..., 1]


def reliability_curves(runs: list[dict]) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """(labels, method) -> the observed test coverage of its fixed and adaptive regions at
    each of ``LEVELS``, averaged over its runs (seeds)."""
    grouped = defaultdict(lambda: defaultdict(list))
    for run in runs:
        val, test = _matrices(run, "val"), _matrices(run, "test")
        if val is None or test is None:
            continue
        method = " / ".join(method_of(run, with_backbone=True))
        for kind, observed in conformal.reliability(*val, *test, LEVELS).items():
            grouped[(run["labels"], method)][kind].append(observed)
    return {key: {kind: np.mean(values, axis=0) for kind, values in kinds.items()} for key, kinds in grouped.items()}


def plot_reliability(curves: dict, dataset: str, path: Path) -> None:
    """One panel per label count: observed against nominal coverage, adaptive regions solid,
    fixed dashed, one colour per method."""
    labels = sorted({n for n, _ in curves})
    methods = sorted({m for _, m in curves})
    colours = dict(zip(methods, plt.cm.tab10.colors * (len(methods) // 10 + 1)))
    fig, axes = plt.subplots(1, len(labels), figsize=(4 * len(labels), 4.2), squeeze=False, sharey=True)
    for ax, count in zip(axes[0], labels):
        ax.plot([0.5, 1], [0.5, 1], color="grey", linewidth=0.8)
        for method in methods:
            if (count, method) in curves:
                observed = curves[(count, method)]
                ax.plot(LEVELS, observed["adaptive"], color=colours[method], label=method)
                ax.plot(LEVELS, observed["fixed"], color=colours[method], linestyle="--")
        ax.set_title(f"{dataset}, {count} labels")
        ax.set_xlabel("nominal coverage")
        ax.set_xlim(0.5, 1)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("observed test coverage")
    fig.tight_layout()
    shown = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(shown.values(), shown.keys(), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0),
               ncol=min(3, len(shown)))  # below the panels: on one it hides the curves
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)

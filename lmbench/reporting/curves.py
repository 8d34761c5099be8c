"""How fine-tuning went: each run's training and validation loss and learning rate per epoch."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lmbench.store import results  # noqa: E402

DPI = 100


def read_curves(runs: list[dict]) -> dict[str, dict[int, list[list[dict]]]]:
    """method -> label count -> one list of epoch rows per seed."""
    curves: dict[str, dict[int, list[list[dict]]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: r["seed"]):
        table = results.read_table("curves", run["_file"])
        if table is not None and table.num_rows:
            method = f"{run['pretrainer_label']} / {run['head_label']} / {run['backbone_label']}"
            curves[method][run["labels"]].append(sorted(table.to_pylist(), key=lambda r: r["epoch"]))
    return curves


def panels(count: int, height: float):
    """A figure of ``count`` panels, three to a row: (figure, its axes in reading order)."""
    columns = min(3, count)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, height * rows), dpi=DPI, squeeze=False)
    return fig, list(axes.flat)


def save_panels(fig, axes: list, used: int, title: str, path: Path) -> None:
    """Blank the panels past the ``used`` ones, title the figure and write it."""
    for ax in axes[used:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot_curves(curves: dict[str, dict[int, list[list[dict]]]], dataset: str, path: Path) -> None:
    """A panel per method: training (solid) and validation (dashed) loss per epoch, a colour
    per label count (every seed drawn), and the learning rate (dotted, right axis)."""
    methods = sorted(curves)
    fig, axes = panels(len(methods), 3.2)
    counts = sorted({n for by_labels in curves.values() for n in by_labels})
    colours = {n: plt.cm.viridis(i / max(1, len(counts) - 1)) for i, n in enumerate(counts)}
    for ax, method in zip(axes, methods):
        rates = ax.twinx()
        for labels, seeds in sorted(curves[method].items()):
            for seed, epochs in enumerate(seeds):
                x = [r["epoch"] for r in epochs]
                first = seed == 0
                ax.plot(x, [r["train_loss"] for r in epochs], color=colours[labels], linewidth=1,
                        label=f"{labels} labels" if first else None)
                validated = [r for r in epochs if math.isfinite(r["val_loss"])]  # NaN: no pass that epoch
                ax.plot([r["epoch"] for r in validated], [r["val_loss"] for r in validated], color=colours[labels],
                        linewidth=1, linestyle="--")
                rates.plot(x, [r["lr"] for r in epochs], color=colours[labels], linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        rates.set_yscale("log")
        rates.tick_params(labelsize=6)
        ax.set_title(method, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    save_panels(fig, axes, len(methods), f"{dataset}: fine-tuning loss (train solid, validation dashed; learning "
                                         f"rate dotted, right axis)", path)

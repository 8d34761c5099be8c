"""The report's training-health section: each pre-training's curve against chance, the
measures its verdict was computed from, and every run the verdicts flagged."""

from __future__ import annotations

import json
from pathlib import Path

from lmbench.reporting.curves import panels, save_panels
from lmbench.reporting.formats import md_text
from lmbench.store import layout, results


def _pretraining(run: dict) -> str:
    recipe = json.loads(run["pretrainer_params"] or "{}").get("recipe")
    label = run["pretrainer_label"]
    return f"{label}{f' ({recipe} recipe)' if recipe and recipe not in label else ''} / {run['backbone_label']}"


def pretrain_curves(runs: list[dict]) -> dict[str, list[dict]]:
    """pre-training (pretrainer, recipe and backbone) -> the rows of its curve, for each
    pre-training the results folders hold a curve of."""
    out: dict[str, list[dict]] = {}
    for run in sorted(runs, key=lambda r: (r["dataset_label"], r["pretrainer_label"])):
        path = layout.pretrain_curve_file(layout.results_dir_of(run["_file"]), run["pretrain_key"])
        name = f"{_pretraining(run)} on {run['dataset_label']}"
        if name not in out and path.exists():
            rows = results.read_pretrain_curve(path)
            if rows:
                out[name] = rows
    return out


def plot_pretrain_curves(curves: dict[str, list[dict]], path: Path) -> None:
    """A panel per pre-training: its loss per iteration, and chance as a dashed line."""
    names = sorted(curves)
    fig, axes = panels(len(names), 3.0)
    for ax, name in zip(axes, names):
        steps, losses = [r["step"] for r in curves[name]], [r["loss"] for r in curves[name]]
        ax.plot(steps, losses, linewidth=0.8, label="loss")
        chance = curves[name][-1]["chance"]
        if chance is not None:
            ax.axhline(chance, color="red", linestyle="--", linewidth=1, label=f"chance {chance:.3f}")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("iteration", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    save_panels(fig, axes, len(names), "Pre-training loss per iteration against chance (the loss of a model that "
                                       "learned nothing)", path)


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def measures_markdown(runs: list[dict]) -> str:
    """One row per pre-training and checkpoint: the measures of its verdict, and the problems
    its run's verdict found there (the run-specific fine-tuning ones are in ``flagged_markdown``)."""
    lines = ["| pre-training | dataset | first loss | last loss | chance | spread | spread at init | "
             "held-out loss | held-out chance | verdict |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    seen = set()
    for run in sorted(runs, key=lambda r: (r["dataset_label"], _pretraining(r))):
        measures = json.loads(run.get("health_measures") or "{}")
        key = (run["pretrain_key"], run["pretrainer_params"])
        if key in seen or not measures:
            continue
        seen.add(key)
        problems = [p for p in (run.get("health") or "").split("; ") if p.startswith("pre-train")]
        cells = [_pretraining(run), run["dataset_label"],
                 *(_number(measures.get(k)) for k in ("first_loss", "last_loss", "chance", "spread", "spread_init",
                                                      "held_out_loss", "held_out_chance")),
                 "; ".join(problems) or "ok"]
        lines.append("| " + " | ".join(md_text(c) for c in cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def flagged_markdown(runs: list[dict]) -> str:
    """Every run whose health verdict found a problem, with it."""
    flagged = [r for r in runs if r.get("health") not in (None, "ok")]
    lines = ["| run | dataset | pre-training | head | labels | seed | problems |", "|---|---|---|---|---:|---:|---|"]
    for run in sorted(flagged, key=lambda r: (r["dataset_label"], _pretraining(r), r["labels"], r["seed"])):
        cells = [run["run_key"], run["dataset_label"], _pretraining(run), run["head_label"], str(run["labels"]),
                 str(run["seed"]), run["health"]]
        lines.append("| " + " | ".join(md_text(c) for c in cells) + " |")
    return "\n".join(lines) if flagged else ""

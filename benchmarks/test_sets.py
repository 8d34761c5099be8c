"""Each run's test MRE and SDR over subsets of its test images, from the per-image predictions
it stored (no rerun): ISBI 2015's challenge test sets, test1 (151-300) and test2 (301-400), and
both pooled, as fully supervised and one-shot papers report them.

    python benchmarks/test_sets.py results/isbi2015-oneshot
    python benchmarks/test_sets.py results/isbi2015-oneshot --set test1=151-300 --set test2=301-400

Each row: dataset | pre-training | backbone | head | labels | seed, then per set its MRE (with a
95% bootstrap interval over its images) and SDR at the run's thresholds.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from lmbench.store import results

ISBI_SETS = ["test1=151-300", "test2=301-400", "pooled=151-400"]


def image_range(text: str) -> tuple[str, int, int]:
    name, _, span = text.partition("=")
    low, _, high = span.partition("-")
    return name, int(low), int(high)


def interval(per_image: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    draws = np.random.default_rng(seed).integers(0, len(per_image), (resamples, len(per_image)))
    means = per_image[draws].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--set", action="append", dest="sets", help="NAME=FIRST-LAST image ids (numbers)")
    args = parser.parse_args()
    sets = [image_range(s) for s in (args.sets or ISBI_SETS)]
    for run in sorted(results.read_runs(args.results), key=lambda r: (r["dataset_label"], r["labels"],
                                                                         r["head_label"], r["pretrainer_label"])):
        if run["status"] != "ok":
            continue
        table = results.read_table("predictions", run["_file"], split="test")
        if table is None:
            continue
        errors: dict[str, list[float]] = defaultdict(list)
        for row in table.to_pylist():
            errors[row["image_id"]].append(row["error"])
        thresholds = [float(t) for t in json.loads(run["thresholds"])]
        cells = []
        for name, low, high in sets:
            chosen = [e for image, e in errors.items() if image.isdigit() and low <= int(image) <= high]
            if not chosen:
                continue
            per_image = np.array([np.mean(e) for e in chosen])
            flat = np.concatenate([np.asarray(e) for e in chosen])
            low_ci, high_ci = interval(per_image)
            sdr = " ".join(f"{100 * np.mean(flat <= t):.1f}" for t in thresholds)
            cells.append(f"{name} ({len(chosen)}): {flat.mean():.2f} [{low_ci:.2f}, {high_ci:.2f}] {run['unit']}, "
                         f"SDR {sdr}")
        print(f"{run['dataset_label']} | {run['pretrainer_label']} | {run['backbone_label']} | {run['head_label']} | "
              f"{run['labels']} labels | seed {run['seed']}: " + "; ".join(cells))


if __name__ == "__main__":
    main()

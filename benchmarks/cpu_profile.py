"""Where a matrix's time goes: seconds per stage of every run, and in total.

    python benchmarks/cpu_profile.py --matrix benchmarks.toml            # cold: a fresh cache
    python benchmarks/cpu_profile.py --matrix benchmarks.toml --cache ~/.cache/lmbench   # warm
    python benchmarks/cpu_profile.py --matrix benchmarks.toml --output before   # keep the results

The matrix runs into a temporary results folder (or ``--output``), with a fresh cache unless
one is given, through lmbench's own path (``run_matrix``); each run row's ``stage_seconds``
(recorded by ``lmbench.train.timing``) is one line of the table. Stages exclude the stages inside them, so
a run's add up to its wall time; "between runs" is what the matrix spent outside them
(imports of plugins, writing results, the executor).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lmbench.config.matrix import load_matrix
from lmbench.run.schedule import run_matrix
from lmbench.store import results

STAGES = ("data", "pre-training", "health probes", "network", "fine-tuning", "validation", "prediction", "scoring",
          "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", type=Path, required=True)
    parser.add_argument("--cache", type=Path, help="a cache to use (warm); default: a fresh one (cold)")
    parser.add_argument("--output", type=Path, help="a results folder to keep (for `lmbench leaderboard`)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        matrix = load_matrix(args.matrix)
        matrix = dataclasses.replace(matrix, output=args.output or Path(tmp) / "results", cache_dir=args.cache or Path(tmp) / "cache")
        start = time.perf_counter()
        summary = run_matrix(matrix, quiet=True)
        elapsed = time.perf_counter() - start
        rows = sorted(results.read_runs([matrix.results_dir]), key=lambda r: r["wall_time_s"] or 0, reverse=True)
    table = Table(title=f"{matrix.name}: {summary.ok} ok, {summary.failed} failed, {elapsed:.1f} s "
                        f"({'warm' if args.cache else 'cold'} cache); seconds per stage")
    for column in ("run", "wall", *STAGES):
        table.add_column(column, justify="left" if column == "run" else "right")
    totals = dict.fromkeys(STAGES, 0.0)
    for row in rows:
        stages = json.loads(row["stage_seconds"] or "{}")
        for name in STAGES:
            totals[name] += stages.get(name, 0.0)
        title = f"{row['pretrainer_label']} | {row['backbone_label']} | {row['head_label']} | {row['labels']}"
        table.add_row(escape(title), f"{row['wall_time_s'] or 0:.1f}", *(f"{stages.get(n, 0):.1f}" for n in STAGES))
    inside = sum(r["wall_time_s"] or 0 for r in rows)
    table.add_row("[bold]all runs[/bold]", f"{inside:.1f}", *(f"{totals[n]:.1f}" for n in STAGES))
    table.add_row("[bold]share[/bold]", "", *(f"{100 * totals[n] / max(inside, 1e-9):.0f}%" for n in STAGES))
    Console(width=200).print(table)
    if inside > elapsed:  # a pool's workers ran several at once
        print(f"runs overlapped: {inside:.1f} s of run time in {elapsed:.1f} s of wall time ({inside / elapsed:.2f}x)")
    else:
        print(f"between runs (plugin imports, writing, the executor): {elapsed - inside:.1f} s of {elapsed:.1f} s")


if __name__ == "__main__":
    main()

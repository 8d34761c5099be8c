"""Which runs of a matrix are still to do, grouped by what trains together, handed to the matrix's executor."""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lmbench.config.matrix import Matrix
from lmbench.config.specs import RunSpec
from lmbench.run.jobs import GroupJob, Summary
from lmbench.run.progress import Tracker
from lmbench.store import cache, integrity, results

Rerun = Literal["failed", "all"] | None
REDO = {"all": {"ok", "failed", "skipped"}, "failed": {"failed", "skipped"}}  # statuses a rerun redoes


def pending_groups(matrix: Matrix, rerun: Rerun = None) -> tuple[list[list[RunSpec]], int]:
    """The runs still to do, grouped by what trains together, and how many are done already."""
    out = matrix.results_dir
    done = results.statuses(out) if out.exists() else {}
    redo = REDO.get(rerun, set())
    todo = [r for r in matrix.runs if r.run_key not in done or done[r.run_key] in redo]
    groups: dict[str, list[RunSpec]] = {}
    for spec in todo:
        groups.setdefault(spec.training_key, []).append(spec)
    return list(groups.values()), len(matrix.runs) - len(todo)


def run_matrix(matrix: Matrix, rerun: Rerun = None, console: Console | None = None, quiet: bool = False,
               executor: str | None = None, nproc: int = 1) -> Summary:
    """Run every cell not already recorded (or as ``rerun`` says) through the matrix's executor
    (or ``executor``), each pre-training over ``nproc`` processes; a failing cell is recorded
    with its error and the matrix goes on."""
    console = console or Console()
    results.remove_leftovers(matrix.results_dir)
    integrity.remove(integrity.stale_temporaries(matrix.cache_dir), "temporary files")
    cache.remove_stopped(matrix.cache_dir)
    groups, already_done = pending_groups(matrix, rerun)
    spec = matrix.executor
    if executor not in (None, spec.name):  # another kind than the matrix's: its defaults
        spec = dataclasses.replace(spec, name=executor, label=executor, params={})
    runner = spec.instantiate()
    job = GroupJob(matrix.results_dir, matrix.cache_dir, frozenset(REDO.get(rerun, set())), nproc=nproc)
    start = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
        summary = runner.run(job, groups, Tracker(progress, console, quiet, sum(map(len, groups)), matrix.name,
                                                      matrix.results_dir))
    summary.already_done += already_done
    summary.seconds = time.perf_counter() - start
    return summary

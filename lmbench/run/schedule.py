"""Which runs of a matrix are still to do, grouped by what trains together, handed to the matrix's executor."""

from __future__ import annotations

import dataclasses
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lmbench.config.matrix import Matrix
from lmbench.config.specs import RunSpec
from lmbench.core.errors import Stopped
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


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGTERM raised as a KeyboardInterrupt naming it, as SIGINT is, after this process's
    multiprocessing children (the pool's workers) are stopped: none outlives the matrix, and
    what they were doing is redone by the next run."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return

    def stop(signum, frame):
        for child in multiprocessing.active_children():
            child.terminate()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    total = sum(map(len, groups))
    try:
        with stopped_by_signals(), Progress(*columns, console=console, disable=quiet, transient=False) as progress:
            summary = runner.run(job, groups, Tracker(progress, console, quiet, total, matrix.name, matrix.results_dir))
    except KeyboardInterrupt as exc:
        name = str(exc) if str(exc) in signal.Signals.__members__ else "SIGINT"
        recorded = results.statuses(matrix.results_dir) if matrix.results_dir.exists() else {}
        finished = sum(spec.run_key in recorded for group in groups for spec in group)
        raise Stopped(f"stopped by {name}: {finished} of the {total} runs to do finished and are kept in "
                      f"{matrix.results_dir}; `lmbench run` again does the other {total - finished} (a pre-training "
                      f"goes on from its last saved state)", 128 + signal.Signals[name].value) from None
    summary.already_done += already_done
    summary.seconds = time.perf_counter() - start
    return summary

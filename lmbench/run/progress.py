"""What executors report to: progress bars on a terminal; off one (a log, nohup), a line per
finished run with its time, its test MRE and an estimate of what is left; each failure as it comes."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from lmbench.config.specs import RunSpec
from lmbench.run.jobs import Summary
from lmbench.store import results


class Tracker:
    """What executors report to: rich progress bars, and the failures as they come."""

    def __init__(self, progress: Progress, console: Console, quiet: bool, total: int, name: str,
                 results_dir: Path | None = None):
        self.progress, self.console, self.quiet = progress, console, quiet
        self.overall = progress.add_task(f"matrix {name}", total=total)
        self._tasks: dict[str, object] = {}
        self.total, self.done, self.results_dir, self.start = total, 0, results_dir, time.perf_counter()

    def started(self, specs: list[RunSpec]):
        """A group begins here; returns its on_stage callback."""
        title = specs[0].title
        task = self.progress.add_task(f"  {title}", total=1)
        self._tasks[specs[0].training_key] = task

        def on_stage(text: str, completed: int, total: int) -> None:
            self.progress.update(task, description=f"  {title}: {text}", completed=completed, total=total)

        return on_stage

    def finished(self, specs: list[RunSpec], summary: Summary) -> None:
        task = self._tasks.pop(specs[0].training_key, None)
        if task is not None:
            self.progress.remove_task(task)
        self.progress.advance(self.overall, len(specs))
        self.done += len(specs)
        if self.quiet:
            return
        for status, title, error in summary.notes:
            self.console.print(f"[red]{status}[/red] {escape(title)}: {escape(error)}", soft_wrap=True)
        if not self.console.is_terminal:  # no bars to watch: one line per run
            for spec in specs:
                self.console.print(escape(self.line(spec)), soft_wrap=True, highlight=False)

    def line(self, spec: RunSpec) -> str:
        """``[done/total] status title: test MRE; minutes so far and left (from the pace so far)``."""
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done)
        row = results.run_row(self.results_dir, spec.run_key) if self.results_dir else None
        text = f"[{self.done}/{self.total}] {row['status'] if row else 'done'} {spec.title}"
        mre = results.overall(row["_file"], "test", "native") if row and row["status"] == "ok" else None
        if mre is not None:
            text += f": test MRE {mre:.2f} {row['unit']}, {row['wall_time_s']:.0f} s"
        return text + f"; {elapsed / 60:.1f} min so far, about {left / 60:.1f} min left"

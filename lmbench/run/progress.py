"""What executors report to: progress bars on a terminal, and each failure as it comes."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from lmbench.config.specs import RunSpec
from lmbench.run.jobs import Summary


class Tracker:
    """What executors report to: rich progress bars, and the failures as they come."""

    def __init__(self, progress: Progress, console: Console, quiet: bool, total: int, name: str):
        self.progress, self.console, self.quiet = progress, console, quiet
        self.overall = progress.add_task(f"matrix {name}", total=total)
        self._tasks: dict[str, object] = {}

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
        if not self.quiet:
            for status, title, error in summary.notes:
                self.console.print(f"[red]{status}[/red] {escape(title)}: {escape(error)}", soft_wrap=True)


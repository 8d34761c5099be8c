"""A group of runs as an executor runs it: claimed by a lock, failures recorded in one line with a log, results written."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from lmbench.config.specs import RunSpec
from lmbench.core.errors import LmbenchError, SkipRun, UnsafePath, one_line
from lmbench.core.plugins import registry
from lmbench.run.context import RunContext, config_row, pick_device, provenance
from lmbench.run.pipeline import Outcome, execute
from lmbench.store import integrity, layout, results
from lmbench.store.locks import file_lock


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    busy: int = 0  # being run by another process at the same time
    seconds: float = 0.0
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # (status, title, error)

    @property
    def failures(self) -> list[tuple[str, str]]:
        return [(title, error) for status, title, error in self.notes if status == "failed"]

    @classmethod
    def lost(cls, group: list[RunSpec], why: str) -> Summary:
        """A group whose worker or job died before writing anything: a rerun redoes it."""
        return cls(failed=len(group), notes=[("failed", spec.title, why) for spec in group])

    def add(self, other: Summary) -> None:
        for name in ("ok", "failed", "skipped", "already_done", "busy"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.notes += other.notes


@dataclass
class GroupJob:
    """Runs one group of runs (a single run, or a joint group's members) wherever an executor
    puts it: in this process, a worker process or a cluster job. Picklable.

    Each group is claimed by a lock in the results folder first, so that processes sharing
    a matrix never do the same work twice; results already written meanwhile are skipped.
    """

    results_dir: Path
    cache_dir: Path
    redo: frozenset[str] = frozenset()  # statuses to run again
    device: str | None = None
    nproc: int = 1  # processes per pre-training and node
    nodes: int = 1  # nodes per pre-training (a SLURM job's, set by the submitit executor)

    def __call__(self, specs: list[RunSpec], on_stage=lambda text, done, total: None) -> Summary:
        claim = layout.claim_file(self.results_dir, specs[0].training_key)
        try:
            with file_lock(claim, wait=False) as mine:
                return self._claimed(specs, mine, on_stage)
        except UnsafePath as exc:  # a claim that cannot be taken safely: these runs wait, the matrix goes on
            return Summary(failed=len(specs), notes=[("failed", spec.title, one_line(exc)) for spec in specs])

    def _claimed(self, specs: list[RunSpec], mine: bool, on_stage) -> Summary:
        summary = Summary()
        if not mine:
            summary.busy = len(specs)
            return summary
        status = {s.run_key: results.status_of(self.results_dir, s.run_key) for s in specs}
        todo = [s for s in specs if status[s.run_key] is None or status[s.run_key] in self.redo]
        summary.already_done = len(specs) - len(todo)
        if todo:
            torch.set_num_threads(todo[0].threads)  # the same count on every executor: the same numbers
            summary.add(self._execute(todo, on_stage))
        return summary

    def context(self) -> RunContext:
        if getattr(self, "_context", None) is None:  # one per process: it holds the decoded datasets
            device = torch.device(self.device) if self.device else pick_device()
            self._context = RunContext(cache_dir=self.cache_dir, device=device, nproc=self.nproc, nodes=self.nodes)
        return self._context

    def __getstate__(self):
        return {k: v for k, v in vars(self).items() if k != "_context"}

    def _execute(self, specs: list[RunSpec], on_stage) -> Summary:
        ctx, summary = self.context(), Summary()
        stage = ["loading"]

        def track(text: str, done: int, total: int) -> None:
            stage[0] = text.split(" (")[0]
            on_stage(text, done, total)

        try:
            try:
                outcomes = execute(specs, ctx, track)
            except torch.cuda.OutOfMemoryError as exc:
                raise LmbenchError(out_of_memory(specs[0])) from exc
            summary.ok = len(specs)
        except Exception as exc:  # any failure is recorded and the matrix goes on
            status = "skipped" if isinstance(exc, SkipRun) else "failed"
            error = one_line(exc)
            outcomes = [Outcome({**config_row(spec), **provenance(ctx), "status": status, "error": error,
                                 "finished_at": datetime.now(UTC).isoformat(timespec="seconds")})
                        for spec in specs]
            setattr(summary, status, len(specs))
            for spec in specs:
                note = error
                if status == "failed":
                    where = f"run {spec.run_key}, {stage[0]}"
                    if stage[0] == "pre-training" and registry().get("pretrainer", spec.pretrainer.name).trains:
                        where += f", cache {layout.pretrain_entry(ctx.cache_dir, spec.pretrain_key)}"
                    note = f"{error} [{where}; {self._write_log(spec, traceback.format_exc())}]"
                summary.notes.append((status, spec.title, note))
        try:
            for outcome in outcomes:
                results.write_run(self.results_dir, outcome.row, outcome.metrics, outcome.predictions,
                                  outcome.curves, outcome.save_model, outcome.pretrain_curve)
        except OSError as exc:  # a full disk, a folder turned read-only: these runs stay pending, the rest go on
            return Summary.lost(specs, f"its results could not be written ({one_line(exc)}); nothing of it was "
                                       f"recorded, a rerun does it again")
        return summary

    def _write_log(self, spec: RunSpec, text: str) -> str:
        """Where the traceback went, or why it could not go anywhere."""
        log = layout.log_file(self.results_dir, spec.run_key)
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            integrity.write_text(log, text)
        except OSError as exc:
            return f"log not written: {exc.strerror or exc}"
        return f"log {log}"


def out_of_memory(spec: RunSpec) -> str:
    batch = spec.finetune["batch_size"]
    pretrainer_batch = spec.pretrainer.params.get("batch_size")
    also = f" or the pretrainer's batch_size ({pretrainer_batch})" if pretrainer_batch else ""
    return (f"out of GPU memory in profile {spec.profile!r} at {spec.image_size} px: lower the fine-tuning "
            f"batch_size ({batch}; raise accumulation to keep the effective batch), its eval_batch_size "
            f"({spec.finetune['eval_batch_size']}){also}, or use a smaller profile")


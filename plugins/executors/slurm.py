"""SLURM job arrays through submitit (``pip install submitit``): one array task per group.

Each task writes its own result files, so a coordinator that dies can be started again: it
submits only what is not finished, and a task still running elsewhere keeps its claim. A task
that SLURM stops (its time limit, preemption) requeues itself through submitit's
checkpointing, and its pre-training resumes from its last resume state. With ``lmbench run
--nproc N`` each task asks for N GPUs and runs its pre-training over N processes; with
``nodes = M`` it asks for M such nodes, the group runs on the first and its pre-trainings
over all of them (torchrun under srun, ``distributed.launch_command``).
``cluster = "local"`` or ``"debug"`` runs the same code path on this machine (submitit's
local and in-process executors), for testing a matrix before a cluster sees it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from lmbench.api import Executor, LmbenchError, NonNegativeInt, PositiveInt, Summary, one_line


class Requeued:
    """A group's job as submitit runs it: stopped by SLURM, it is submitted again as it was.
    Of a job on several nodes, the first runs the group; the others return at once, lending
    their GPUs to its pre-trainings."""

    def __init__(self, job, nodes: int = 1):
        self.job, self.nodes = job, nodes

    def __call__(self, group):
        import submitit

        if self.nodes > 1 and submitit.JobEnvironment().global_rank > 0:
            return Summary()
        return self.job(group)

    def checkpoint(self, group):
        import submitit

        return submitit.helpers.DelayedSubmission(self, group)


class Submitit(Executor):
    @dataclass
    class Params:
        folder: str = "slurm-jobs"  # submitit's logs and pickles, one folder per job
        cluster: str = ""  # "" (SLURM when available), "slurm", "local" or "debug"
        partition: str = ""
        time_min: PositiveInt = 240
        gpus: NonNegativeInt = 1
        nodes: PositiveInt = 1  # per job: each pre-training runs over every GPU of them all
        cpus: PositiveInt = 8
        mem_gb: NonNegativeInt = 0  # 0: the partition's default
        array_parallelism: PositiveInt = 16
        sbatch: dict = field(default_factory=dict)  # more sbatch options, e.g. { account = "lab" }

    def executor(self, nproc: int = 1):
        try:
            import submitit
        except ImportError:
            raise LmbenchError("the submitit executor needs submitit: pip install submitit") from None
        p = self.params
        executor = submitit.AutoExecutor(folder=Path(p.folder).expanduser() / "%j", cluster=p.cluster or None)
        options = {"timeout_min": p.time_min, "cpus_per_task": p.cpus, "slurm_array_parallelism": p.array_parallelism,
                   "slurm_additional_parameters": dict(p.sbatch)}
        if p.gpus:
            options["gpus_per_node"] = max(p.gpus, nproc)
        if p.partition:
            options["slurm_partition"] = p.partition
        if p.mem_gb:
            options["mem_gb"] = p.mem_gb
        if p.nodes > 1:
            if executor.cluster != "slurm":
                raise LmbenchError(f"the submitit executor runs a job on several nodes (nodes = {p.nodes}) only on "
                                   f"SLURM, not on {executor.cluster!r}")
            options.update(nodes=p.nodes, tasks_per_node=1)
        executor.update_parameters(**options)
        return executor

    def run(self, job, groups, tracker):
        summary = Summary()
        if not groups:
            return summary
        executor = self.executor(getattr(job, "nproc", 1))
        if self.params.nodes > 1:
            job = dataclasses.replace(job, nodes=self.params.nodes)
        jobs = executor.map_array(Requeued(job, self.params.nodes), groups)
        for submitted, group in zip(jobs, groups):
            try:
                done = submitted.results()[0]  # the first node's: the others only lend their GPUs
            except Exception as exc:
                done = Summary.lost(group, f"job {submitted.job_id} lost: {one_line(exc)}")
            tracker.finished(group, done)
            summary.add(done)
        return summary

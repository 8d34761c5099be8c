"""Where a matrix runs: this process (local), worker processes (pool), SLURM (submitit)."""

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_executors(register):
    register("local", "lmbench_plugins.executors.local:Local")
    register("pool", "lmbench_plugins.executors.pool:Pool")
    register("submitit", "lmbench_plugins.executors.slurm:Submitit")

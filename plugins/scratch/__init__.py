from lmbench.api import hookimpl


@hookimpl
def lmbench_register_pretrainers(register):
    register("scratch", "lmbench_plugins.scratch.pretrainer:Scratch")

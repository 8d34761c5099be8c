from lmbench.api import hookimpl


@hookimpl
def lmbench_register_heads(register):
    register("gaussian", "lmbench_plugins.gaussian.head:GaussianHead")

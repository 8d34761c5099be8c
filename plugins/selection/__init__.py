"""Which training images get the few labels: the paper's first N, a seeded draw, or the
images that best represent the training pool."""

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_selectors(register):
    register("first", "lmbench_plugins.selection.selectors:First")
    register("random", "lmbench_plugins.selection.selectors:Random")
    register("representative", "lmbench_plugins.selection.selectors:Representative")

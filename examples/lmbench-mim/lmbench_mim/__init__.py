"""Masked image modelling for lmbench: registered lazily, so listing plugins stays fast."""

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_pretrainers(register):
    register("mim", "lmbench_mim.pretrainer:MaskedImageModelling")

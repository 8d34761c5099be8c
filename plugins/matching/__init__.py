from lmbench.api import hookimpl


@hookimpl
def lmbench_register_heads(register):
    register("feature-match", "lmbench_plugins.matching.head:FeatureMatch")

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_heads(register):
    register("contour-hugging", "lmbench_plugins.contour_hugging.head:ContourHuggingHead")

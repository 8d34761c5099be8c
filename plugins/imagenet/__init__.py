"""ImageNet-supervised weights for the smp-unet encoder, from local caches or a file."""

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_pretrainers(register):
    register("imagenet", "lmbench_plugins.imagenet.pretrainer:ImageNet")

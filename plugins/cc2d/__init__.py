"""CC2D's self-supervised pre-training (Yao et al., MICCAI 2021): an encoder trained to find
a patch's points in the whole image by comparing feature maps, for one-shot matching."""

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_pretrainers(register):
    register("cc2d", "lmbench_plugins.cc2d.pretrainer:Cc2d")

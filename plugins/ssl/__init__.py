"""Self-supervised baselines of the paper (MoCoV3, SimCLRv2, DINO) built from lightly's
heads, losses, view transforms and momentum utilities, pre-training the encoder of the
``smp-unet`` backbone on the unlabeled pool."""

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_pretrainers(register):
    register("mocov3", "lmbench_plugins.ssl.mocov3:MoCoV3")
    register("simclrv2", "lmbench_plugins.ssl.simclrv2:SimCLRv2")
    register("dino", "lmbench_plugins.ssl.dino:Dino")

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_backbones(register):
    register("smp-unet", "lmbench_plugins.smp_unet.backbone:SmpUnet")

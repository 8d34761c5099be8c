from lmbench.api import hookimpl


@hookimpl
def lmbench_register_backbones(register):
    register("vit", "lmbench_plugins.vit.backbone:VitBackbone")


@hookimpl
def lmbench_register_pretrainers(register):
    register("foundation", "lmbench_plugins.vit.pretrainer:Foundation")

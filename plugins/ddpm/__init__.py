"""The paper's method: DDPM pre-training (diffusers) and the DDPM U-Net landmark detector."""

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_pretrainers(register):
    register("ddpm", "lmbench_plugins.ddpm.pretrainer:DdpmPretrainer")


@hookimpl
def lmbench_register_backbones(register):
    register("ddpm-unet", "lmbench_plugins.ddpm.backbone:DdpmUNet")


@hookimpl
def lmbench_register_commands(app):
    from lmbench_plugins.ddpm.sample import sample_command

    app.command("ddpm-sample")(sample_command)

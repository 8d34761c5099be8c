"""The DDPM U-Net (diffusers ``UNet2DModel``) and the landmark detector made from it.

Presets: ``paper`` follows the paper's text (channel multipliers 1, 2, 4, 8, attention at
resolution 32 with 4 heads, 4 residual blocks per level; the base width is not stated, 64
here). ``published`` comes as close as diffusers allows to the authors' code: base width 256
(widths 256-2048), 2 residual blocks per level, GroupNorm of 4 groups, heads of width 32, an
all-zero self-conditioning input channel, inputs in [0, 1]. That code has linear attention at
every level; diffusers has only full attention, which at 256 and 128 px would cost orders of
magnitude more than the original, so attention sits at 64 px, 32 px and the bottleneck.
``quick`` and ``smoke`` are small U-Nets for CPUs. Every field can be set on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
from diffusers import UNet2DModel
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from lmbench.errors import PluginError
from lmbench.interfaces import Backbone

PRESETS = {
    "smoke": dict(base_width=16, multipliers=[1, 2, 4], layers_per_block=1, attention_resolutions=[16],
                  attention_head_dim=16, norm_groups=8, self_condition=False, input_range="unit"),
    "quick": dict(base_width=16, multipliers=[1, 2, 4, 8], layers_per_block=1, attention_resolutions=[16],
                  attention_head_dim=32, norm_groups=8, self_condition=False, input_range="unit"),
    "paper": dict(base_width=64, multipliers=[1, 2, 4, 8], layers_per_block=4, attention_resolutions=[32],
                  attention_head_dim=128, norm_groups=32, self_condition=False, input_range="unit"),
    "published": dict(base_width=256, multipliers=[1, 2, 4, 8], layers_per_block=2, attention_resolutions=[64, 32],
                      attention_head_dim=32, norm_groups=4, self_condition=True, input_range="unit"),
}


def build_unet(config: dict, image_size: int, out_channels: int) -> UNet2DModel:
    """A diffusers U-Net from a resolved preset, one image channel in (two with self-conditioning)."""
    widths = [config["base_width"] * m for m in config["multipliers"]]
    if image_size % 2 ** (len(widths) - 1):
        raise PluginError(f"ddpm-unet: image size {image_size} is not divisible by 2**{len(widths) - 1}")
    if any(w % config["norm_groups"] for w in widths):
        raise PluginError(f"ddpm-unet: widths {widths} are not divisible by norm_groups {config['norm_groups']}")
    resolutions = [image_size // 2**i for i in range(len(widths))]
    attention = [r in config["attention_resolutions"] for r in resolutions]
    return UNet2DModel(
        sample_size=image_size,
        in_channels=2 if config["self_condition"] else 1,
        out_channels=out_channels,
        block_out_channels=widths,
        layers_per_block=config["layers_per_block"],
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        attention_head_dim=config["attention_head_dim"],
        norm_num_groups=config["norm_groups"],
    )


class UNetInput(nn.Module):
    """Maps [0, 1] images to the U-Net's input: its range, plus the zero self-conditioning channel."""

    def __init__(self, input_range: str, self_condition: bool):
        super().__init__()
        self.symmetric = input_range == "symmetric"
        self.self_condition = self_condition

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images * 2 - 1 if self.symmetric else images
        return torch.cat([x, torch.zeros_like(x)], dim=1) if self.self_condition else x


class TimelessUNet(nn.Module):
    """The DDPM U-Net run as a detector, with the paper's "null" timestep embedding.

    diffusers' ``UNet2DModel.forward`` always embeds a timestep. This module runs the same
    layers in the same order with ``temb=None`` after removing the time MLP and each residual
    block's time projection, so that every block skips the time term (diffusers' residual
    blocks add it only when they have a projection), exactly as the authors' code does with
    ``time = None``. Feeding a fixed timestep instead would add learned biases the paper's
    detector does not have. The removed tensors are reported as unused when the
    pre-trained weights are loaded.
    """

    def __init__(self, unet: UNet2DModel, prepare: UNetInput):
        super().__init__()
        unet.time_proj = unet.time_embedding = None
        for module in unet.modules():
            if isinstance(module, ResnetBlock2D):
                module.time_emb_proj = None
        self.unet = unet
        self.prepare = prepare

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        u = self.unet
        x = u.conv_in(self.prepare(images))
        skips = (x,)
        for block in u.down_blocks:
            x, residuals = block(hidden_states=x, temb=None)
            skips += residuals
        x = u.mid_block(x, None)
        for block in u.up_blocks:
            count = len(block.resnets)
            x = block(x, skips[-count:], None)
            skips = skips[:-count]
        return u.conv_out(u.conv_act(u.conv_norm_out(x)))


class DdpmUNet(Backbone):
    """The DDPM U-Net; ``None`` fields take the preset's value."""

    @dataclass
    class Params:
        preset: Literal["smoke", "quick", "paper", "published"] = "paper"
        base_width: int | None = None
        multipliers: list[int] | None = None
        layers_per_block: int | None = None
        attention_resolutions: list[int] | None = None  # feature-map sizes (px) with self-attention
        attention_head_dim: int | None = None
        norm_groups: int | None = None
        self_condition: bool | None = None  # an extra all-zero input channel, as the published code
        input_range: Literal["unit", "symmetric"] | None = None  # [0, 1] (published) or [-1, 1]

    profile_defaults = {"smoke": {"preset": "smoke"}, "quick": {"preset": "quick"}, "paper": {"preset": "paper"}}

    def config(self) -> dict:
        preset = PRESETS[self.params.preset]
        return {f.name: getattr(self.params, f.name) if getattr(self.params, f.name) is not None else preset[f.name]
                for f in fields(self.Params) if f.name != "preset"}

    def build_unet(self, image_size: int, out_channels: int = 1) -> UNet2DModel:
        return build_unet(self.config(), image_size, out_channels)

    def input_adapter(self) -> UNetInput:
        config = self.config()
        return UNetInput(config["input_range"], config["self_condition"])

    def build(self, num_landmarks, image_size):
        return TimelessUNet(self.build_unet(image_size, num_landmarks), self.input_adapter())

"""The DDPM U-Net and the landmark detector made from it.

Two networks, ``network = "published"`` (the paper's published code, ``published_unet.py``)
and ``"diffusers"`` (a diffusers ``UNet2DModel``), and four presets:

- ``published``: the authors' U-Net as their code builds it, about 558.5M parameters at
  256 px. The paper profile's default.
- ``paper-text``: the paper's text read literally on a diffusers U-Net (channel multipliers
  1, 2, 4, 8 of base width 64, attention at 32 px with 4 heads, 4 residual blocks per level),
  99.8M parameters. In the published code "4 residual blocks" is the GroupNorm group count
  and "attention at resolution 32" the attention head width.
- ``quick`` and ``smoke``: small diffusers U-Nets for CPUs. The published network shrunk to
  width 16 made a far worse detector there (ISBI, smoke profile, 1 label: 27 to 38 mm
  against 11 to 16 mm; ``network = "published"`` builds it on any preset).

Every field can be set on its own; ``None`` takes the preset's value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
from diffusers import UNet2DModel
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from lmbench.api import Backbone, PluginError, PositiveInt, WeightSlot
from lmbench_plugins.ddpm.published_unet import PublishedUNet

PRESETS = {
    "smoke": dict(network="diffusers", base_width=16, multipliers=[1, 2, 4], layers_per_block=1, attention_heads=None,
                  attention_head_dim=16, norm_groups=8, attention_resolutions=[16], self_condition=False,
                  input_range="unit"),
    "quick": dict(network="diffusers", base_width=16, multipliers=[1, 2, 4, 8], layers_per_block=1,
                  attention_heads=None, attention_head_dim=32, norm_groups=8, attention_resolutions=[16],
                  self_condition=False, input_range="unit"),
    "published": dict(network="published", base_width=256, multipliers=[1, 2, 4, 8], layers_per_block=2,
                      attention_heads=4, attention_head_dim=32, norm_groups=4, attention_resolutions=None,
                      self_condition=True, input_range="unit", ws_eps="fixed"),
    "paper-text": dict(network="diffusers", base_width=64, multipliers=[1, 2, 4, 8], layers_per_block=4,
                       attention_heads=None, attention_head_dim=128, norm_groups=32, attention_resolutions=[32],
                       self_condition=False, input_range="unit"),
}
#: fields that only one network has
ONLY = {"attention_heads": "published", "attention_resolutions": "diffusers", "ws_eps": "published"}


def build_unet(config: dict, image_size: int, out_channels: int) -> nn.Module:
    """The noise-prediction U-Net of a resolved config: ``forward(x, timesteps)``."""
    widths = [config["base_width"] * m for m in config["multipliers"]]
    if image_size % 2 ** (len(widths) - 1):
        raise PluginError(f"ddpm-unet: image size {image_size} is not divisible by 2**{len(widths) - 1}")
    if any(w % config["norm_groups"] for w in widths + [config["base_width"]]):
        raise PluginError(f"ddpm-unet: widths {widths} are not divisible by norm_groups {config['norm_groups']}")
    in_channels = 2 if config["self_condition"] else 1
    if config["network"] == "published":
        return PublishedUNet(in_channels, out_channels, config["base_width"], config["multipliers"],
                             config["layers_per_block"], config["norm_groups"], config["attention_heads"],
                             config["attention_head_dim"], eps_by_dtype=config["ws_eps"] == "by-dtype")
    resolutions = [image_size // 2**i for i in range(len(widths))]
    attention = [r in config["attention_resolutions"] for r in resolutions]
    return UNet2DModel(
        sample_size=image_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=widths,
        layers_per_block=config["layers_per_block"],
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        attention_head_dim=config["attention_head_dim"],
        norm_num_groups=config["norm_groups"],
    )


def predict_noise(unet: nn.Module, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The noise either network predicts for ``x`` at ``timesteps``."""
    out = unet(x, timesteps)
    return out if isinstance(out, torch.Tensor) else out.sample


class UNetInput(nn.Module):
    """Maps [0, 1] images to the U-Net's input: its range, after the all-zero self-conditioning
    channel where the U-Net has one (first, as the published code concatenates it)."""

    def __init__(self, input_range: str, self_condition: bool):
        super().__init__()
        self.symmetric = input_range == "symmetric"
        self.self_condition = self_condition

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images * 2 - 1 if self.symmetric else images
        return torch.cat([torch.zeros_like(x), x], dim=1) if self.self_condition else x


class Detector(nn.Module):
    """The DDPM U-Net run as a detector, with the paper's "null" timestep: every residual block
    skips its time term, exactly as the authors' code does with ``time = None``. The time MLPs
    are removed, so they are reported as unused when the pre-trained weights are loaded;
    feeding a fixed timestep instead would add learned biases the paper's detector lacks."""

    def __init__(self, unet: nn.Module, prepare: UNetInput):
        super().__init__()
        if isinstance(unet, PublishedUNet):
            unet.drop_time_embedding()
        else:  # diffusers' residual blocks add the time term only when they have a projection
            unet.time_proj = unet.time_embedding = None
            for module in unet.modules():
                if isinstance(module, ResnetBlock2D):
                    module.time_emb_proj = None
        self.unet = unet
        self.prepare = prepare

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.prepare(images)
        u = self.unet
        if isinstance(u, PublishedUNet):
            return u(x)
        # diffusers' UNet2DModel.forward always embeds a timestep: the same layers, in order
        x = u.conv_in(x)
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
    """The DDPM U-Net; ``None`` fields take the preset's value when the params are built."""

    @dataclass
    class Params:
        preset: Literal["smoke", "quick", "published", "paper-text"] = "published"
        network: Literal["published", "diffusers"] | None = None
        base_width: PositiveInt | None = None
        multipliers: list[int] | None = None
        layers_per_block: PositiveInt | None = None
        attention_heads: PositiveInt | None = None  # published network: heads of every attention
        attention_head_dim: PositiveInt | None = None
        attention_resolutions: list[int] | None = None  # diffusers network: feature-map sizes (px) with attention
        norm_groups: PositiveInt | None = None
        self_condition: bool | None = None  # an extra all-zero input channel, as the published code
        input_range: Literal["unit", "symmetric"] | None = None  # [0, 1] (published) or [-1, 1]
        # published network: weight standardisation's eps, 1e-5 ("fixed", the published code's at
        # its fp32), or the published rule to the letter, 1e-3 for non-fp32 activations ("by-dtype")
        ws_eps: Literal["fixed", "by-dtype"] | None = None

        def __post_init__(self):
            preset = PRESETS[self.preset]
            network = self.network or preset["network"]
            for name, owner in ONLY.items():  # fields of the other network: none
                if network != owner:
                    if getattr(self, name) is not None:
                        raise PluginError(f"ddpm-unet: {name} applies to network {owner!r}, not {network!r}")
                    preset = {**preset, name: None}
                elif preset.get(name) is None:
                    preset = {**preset, name: PRESETS["published" if owner == "published" else "paper-text"][name]}
            for f in fields(self):
                if getattr(self, f.name) is None:
                    setattr(self, f.name, preset[f.name])

    profile_defaults = {"smoke": {"preset": "smoke"}, "quick": {"preset": "quick"}, "paper": {"preset": "published"}}

    def config(self) -> dict:
        return {f.name: getattr(self.params, f.name) for f in fields(self.Params) if f.name != "preset"}

    def build_unet(self, image_size: int, out_channels: int = 1) -> nn.Module:
        return build_unet(self.config(), image_size, out_channels)

    def input_adapter(self) -> UNetInput:
        config = self.config()
        return UNetInput(config["input_range"], config["self_condition"])

    def build(self, num_landmarks, image_size):
        return Detector(self.build_unet(image_size, num_landmarks), self.input_adapter())

    def features(self, model, images):
        """The decoder's levels, coarsest first, as the detector computes them (no time term):
        the whole denoising U-Net is pre-trained, its decoder included."""
        unet = model.unet
        levels = [level.attention for level in unet.up] if isinstance(unet, PublishedUNet) else list(unet.up_blocks)
        maps: list[torch.Tensor] = []
        hooks = [level.register_forward_hook(lambda module, args, out: maps.append(out)) for level in levels]
        try:
            model(images)
        finally:
            for hook in hooks:
                hook.remove()
        return maps

    def weight_slots(self):
        """The whole U-Net, as a noise predictor on ``input_adapter``'s inputs."""
        return [*super().weight_slots(), WeightSlot("ddpm-unet", prefix="unet.")]

    def build_part(self, part, num_landmarks, image_size):
        return self.build_unet(image_size) if part == "ddpm-unet" else super().build_part(part, num_landmarks, image_size)

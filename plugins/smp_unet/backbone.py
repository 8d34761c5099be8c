"""A segmentation-models-pytorch U-Net with any timm or smp encoder, on the gray image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import segmentation_models_pytorch as smp
import torch
from torch import nn

from lmbench.api import Backbone, LoadReport, PluginError, PositiveInt, WeightSlot


def repeat_gray(encoder: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
    """A forward pre-hook: a one-channel input repeated to the 3-channel stem's channels."""
    x = args[0]
    return (x.expand(-1, 3, -1, -1), *args[1:]) if x.shape[1] == 1 else None


class SmpUnet(Backbone):
    """U-Net whose encoder receives a pretrainer's weights; the decoder always starts fresh.

    ``encoder`` is an smp encoder name (``densenet161``, as the paper) or ``tu-<timm name>``.
    Weights never download here: pretrainers provide them, for the encoder.

    ``in_channels = 3`` gives the encoder a 3-channel stem with its own initialisation and
    feeds it the gray image repeated, as the published downstream code does for every
    self-supervised row (its SSL encoders were trained on 3-channel views).
    """

    @dataclass
    class Params:
        encoder: str = "densenet161"
        encoder_depth: PositiveInt = 5
        decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 32, 16])
        in_channels: Literal[1, 3] = 1

    profile_defaults = {
        "smoke": {"encoder": "tu-resnet10t", "decoder_channels": [64, 32, 16, 16, 8]},
        "quick": {"encoder": "tu-resnet18", "decoder_channels": [128, 64, 32, 16, 16]},
    }

    def build(self, num_landmarks, image_size):
        p = self.params
        if len(p.decoder_channels) != p.encoder_depth:
            raise PluginError(
                f"smp-unet: decoder_channels has {len(p.decoder_channels)} entries, encoder_depth is {p.encoder_depth}"
            )
        if image_size % 2**p.encoder_depth:
            raise PluginError(f"smp-unet: image size {image_size} is not divisible by 2**{p.encoder_depth}")
        unet = smp.Unet(
            encoder_name=p.encoder,
            encoder_depth=p.encoder_depth,
            encoder_weights=None,
            decoder_channels=list(p.decoder_channels),
            in_channels=p.in_channels,
            classes=num_landmarks,
        )
        if p.in_channels == 3:  # on the encoder, so that the part a pretrainer trains takes gray images too
            unet.encoder.register_forward_pre_hook(repeat_gray)
        return unet

    def features(self, model, images):
        """The encoder's stages (what pre-training trained; the decoder starts fresh), coarsest first."""
        return model.encoder(images)[1:][::-1]  # the first "stage" is the input itself

    def weight_slots(self):
        return [*super().weight_slots(), WeightSlot("unet-encoder", prefix="encoder.", architecture=self.params.encoder)]

    def build_part(self, part, num_landmarks, image_size):
        if part == "unet-encoder":
            return self.build(num_landmarks, image_size).encoder
        return super().build_part(part, num_landmarks, image_size)

    def load_pretrained(self, model, weights) -> LoadReport:
        """Every encoder tensor must come from ``weights`` with its shape, and every weight must
        name a tensor of the network; decoder and head tensors of another shape (a pretext
        task's output channels) are left fresh."""
        report = super().load_pretrained(model, weights)
        missing = [n for n in report.missing if n.startswith("encoder.")]
        mismatched = [n for n in report.mismatched if n.startswith("encoder.")]
        if missing or mismatched or report.unexpected:
            parts = [f"{len(names)} {what} (e.g. {', '.join(names[:3])})" for what, names in
                     (("missing", missing), ("of another shape", mismatched), ("unknown", report.unexpected)) if names]
            raise PluginError(f"smp-unet: the pre-trained weights do not fit encoder {self.params.encoder}: "
                              f"{'; '.join(parts)}")
        return report

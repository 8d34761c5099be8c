"""A timm Vision Transformer as a backbone: frozen foundation features (DINOv2, say) to match,
or a detector to fine-tune.

The gray image is repeated to the patch embedding's three channels and resized to the nearest
multiple of the patch size, so that the patch grid covers the image exactly. ``features`` gives
the patch tokens of the last ``feature_blocks`` blocks as (B, C, H/p, W/p) maps; the detector
maps the last block's tokens to one heatmap per landmark (a 1x1 convolution, upsampled)."""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from lmbench.api import Backbone, PositiveInt, WeightSlot


class VitDetector(nn.Module):
    def __init__(self, encoder: nn.Module, num_landmarks: int, feature_blocks: int):
        super().__init__()
        self.encoder = encoder
        self.feature_blocks = feature_blocks
        self.head = nn.Conv2d(encoder.embed_dim, num_landmarks, 1)

    def tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The last ``feature_blocks`` blocks' patch tokens of (B, 1, S, S) images, as maps."""
        patch = self.encoder.patch_embed.patch_size[0]
        side = max(patch, round(images.shape[-1] / patch) * patch)
        x = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
        return self.encoder.forward_intermediates(x.expand(-1, 3, -1, -1), indices=self.feature_blocks,
                                                  output_fmt="NCHW", intermediates_only=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.tokens(images)[-1])
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


class VitBackbone(Backbone):
    """``model``: a timm ViT name; weights come from a pretrainer (``foundation``)."""

    @dataclass
    class Params:
        model: str = "vit_small_patch14_dinov2"
        feature_blocks: PositiveInt = 2  # how many of the last blocks' tokens ``features`` gives

    def encoder(self, image_size: int) -> nn.Module:
        return timm.create_model(self.params.model, pretrained=False, num_classes=0, img_size=image_size,
                                 dynamic_img_size=True)

    def build(self, num_landmarks, image_size):
        return VitDetector(self.encoder(image_size), num_landmarks, self.params.feature_blocks)

    def features(self, model, images):
        return model.tokens(images)

    def weight_slots(self):
        return [*super().weight_slots(), WeightSlot("vit-encoder", prefix="encoder.", architecture=self.params.model)]

    def build_part(self, part, num_landmarks, image_size):
        if part == "vit-encoder":
            return self.encoder(image_size)
        return super().build_part(part, num_landmarks, image_size)

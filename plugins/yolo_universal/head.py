"""GU2Net's head: a Gaussian of width ``sigma`` around each landmark with a peak of 1, one
binary cross-entropy per pixel and landmark (sigmoid outputs, not a softmax), argmax decoding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmbench.api import HeadStrategy


class GaussianBceHead(HeadStrategy):
    @dataclass
    class Params:
        sigma: float = 3.0  # in network-input pixels, as GU2Net at its input size

    profile_defaults = {"smoke": {"sigma": 1.5}, "quick": {"sigma": 2.0}}

    def targets(self, landmarks, size):
        height, width = size
        ys = torch.arange(height, device=landmarks.device, dtype=torch.float32).view(1, 1, -1, 1)
        xs = torch.arange(width, device=landmarks.device, dtype=torch.float32).view(1, 1, 1, -1)
        squared = (xs - landmarks[..., 0, None, None]) ** 2 + (ys - landmarks[..., 1, None, None]) ** 2
        return torch.exp(-squared / (2 * self.params.sigma**2))

    def loss(self, logits, targets):
        return F.binary_cross_entropy_with_logits(logits, targets)

    def decode(self, logits):
        batch, channels, height, width = logits.shape
        index = logits.reshape(batch, channels, -1).argmax(dim=-1)
        return torch.stack([index % width, index // width], dim=-1).float()

"""GU2Net's head: a Gaussian of width ``sigma`` around each landmark, cut to a square window
of ``window`` sigmas either side and min-max scaled within it (peak 1, window corners 0), as
its published code; one binary cross-entropy per pixel and landmark (sigmoid outputs, not a
softmax), argmax decoding.

The published target is a 2r x 2r mask pasted at the landmark rounded to a pixel, so its
window reaches r pixels below the centre and r - 1 above (``window_grid = "published"``);
``"symmetric"`` centres the Gaussian on the landmark itself, r - 1 pixels either side."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from lmbench.api import HeadStrategy, NonNegativeFloat, PositiveFloat


class GaussianBceHead(HeadStrategy):
    @dataclass
    class Params:
        sigma: PositiveFloat = 3.0  # in network-input pixels, as GU2Net at its input size
        window: NonNegativeFloat = 3.0  # half-width of the window in sigmas; 0: the whole Gaussian
        window_grid: Literal["published", "symmetric"] = "published"

    profile_defaults = {"smoke": {"sigma": 1.5, "window_grid": "symmetric"},
                        "quick": {"sigma": 2.0, "window_grid": "symmetric"}}

    def targets(self, landmarks, size):
        height, width = size
        ys = torch.arange(height, device=landmarks.device, dtype=torch.float32).view(1, 1, -1, 1)
        xs = torch.arange(width, device=landmarks.device, dtype=torch.float32).view(1, 1, 1, -1)
        published = self.params.window_grid == "published"
        centres = landmarks.round() if published else landmarks
        dx, dy = xs - centres[..., 0, None, None], ys - centres[..., 1, None, None]
        sigma = self.params.sigma
        heat = torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))
        if not self.params.window:
            return heat
        radius = round(self.params.window * sigma)
        corner = math.exp(-(2 * radius**2) / (2 * sigma**2))
        if published:
            inside = (dx >= -radius) & (dx < radius) & (dy >= -radius) & (dy < radius)
        else:
            inside = (dx.abs() < radius) & (dy.abs() < radius)
        return torch.where(inside, (heat - corner) / (1 - corner), torch.zeros_like(heat)).clamp(min=0)

    def loss(self, logits, targets):
        return F.binary_cross_entropy_with_logits(logits, targets)

    def probabilities(self, logits):
        """Each channel's sigmoid outputs, normalised: its trained Gaussian as a distribution."""
        heat = logits.float().sigmoid().flatten(2)
        return (heat / heat.sum(-1, keepdim=True)).view_as(logits)

    def exported_decoding(self):
        return {"rule": "argmax"}

    def decode(self, logits):
        batch, channels, height, width = logits.shape
        index = logits.reshape(batch, channels, -1).argmax(dim=-1)
        return torch.stack([index % width, index // width], dim=-1).float()

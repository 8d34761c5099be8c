"""The paper's Gaussian heatmap head.

Target: per landmark, the pixels where a Gaussian of width ``sigma`` around the rounded point
is at least half its maximum, a binary disk of radius sigma * sqrt(2 ln 2). Loss: cross-entropy
with these as probability targets, a softmax across landmark channels at each pixel; pixels
outside every disk contribute nothing.

Decoding, two rules:

- ``contour`` (the published code's): each channel's raw logits thresholded at half their
  maximum; the external contours of that mask (OpenCV, 8-connected); the contour of largest
  polygon area; its centroid from the polygon's moments. A channel whose maximum logit is
  negative (nothing passes) or whose largest contour has no area gives (0, 0).
- ``region``: the softmax probabilities thresholded at half their maximum; the largest
  4-connected region by pixel count; the mean of its pixels. Never (0, 0) by default.

The loss ignores pixels outside every disk, so the logits there are free and the two rules
can keep different pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from lmbench.api import HeadStrategy, PositiveFloat
from lmbench.deploy import largest_contour_centroid, largest_region_centroid  # numpy only, shared with exports


class GaussianHead(HeadStrategy):
    @dataclass
    class Params:
        sigma: PositiveFloat = 5.0  # in network-input pixels; the paper's 5 is for 256 x 256 inputs
        decode: Literal["contour", "region"] = "contour"

    profile_defaults = {"smoke": {"sigma": 2.0}, "quick": {"sigma": 3.0}}

    def targets(self, landmarks, size):
        height, width = size
        points = landmarks.round()
        ys = torch.arange(height, device=landmarks.device, dtype=torch.float32).view(1, 1, -1, 1)
        xs = torch.arange(width, device=landmarks.device, dtype=torch.float32).view(1, 1, 1, -1)
        squared = (xs - points[..., 0, None, None]) ** 2 + (ys - points[..., 1, None, None]) ** 2
        return (torch.exp(-squared / (2 * self.params.sigma**2)) >= 0.5).float()

    def loss(self, logits, targets):
        return F.cross_entropy(logits, targets)

    def probabilities(self, logits):
        """The pixels decoding keeps, weighted by how far above half the maximum they are: a
        wide or split peak spreads; background pixels, which the loss leaves free, do not."""
        maps = logits.float() if self.params.decode == "contour" else logits.float().softmax(dim=1)
        peak = maps.flatten(2).amax(-1)[..., None, None]
        weights = (maps - 0.5 * peak).clamp_min(0).flatten(2)
        mass = weights.sum(-1, keepdim=True)
        uniform = torch.full_like(weights, 1 / weights.shape[-1])  # nothing above half (a negative peak)
        return torch.where(mass > 0, weights / mass.clamp_min(1e-30), uniform).view_as(logits)

    def decode(self, logits):
        if self.params.decode == "contour":
            maps, rule = logits.float().cpu().numpy(), largest_contour_centroid
        else:
            maps, rule = logits.float().softmax(dim=1).cpu().numpy(), largest_region_centroid
        out = np.array([[rule(channel) for channel in image] for image in maps], dtype=np.float64)
        return torch.from_numpy(out.reshape(*maps.shape[:2], 2)).float()

    def exported_decoding(self):
        return {"rule": self.params.decode}


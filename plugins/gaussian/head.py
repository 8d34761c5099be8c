"""The paper's Gaussian heatmap head.

Target: per landmark, the pixels where a Gaussian of width ``sigma`` around the rounded point
is at least half its maximum, a binary disk of radius sigma * sqrt(2 ln 2). Loss: cross-entropy
with these as probability targets, a softmax across landmark channels at each pixel; pixels
outside every disk contribute nothing. Decoding: threshold each channel's probabilities at
half their maximum, keep the largest connected region, return its centroid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from lmbench.interfaces import HeadStrategy


class GaussianHead(HeadStrategy):
    @dataclass
    class Params:
        sigma: float = 5.0  # in network-input pixels; the paper's 5 is for 256 x 256 inputs

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

    def decode(self, logits):
        probabilities = logits.softmax(dim=1).cpu().numpy()
        batch, channels = probabilities.shape[:2]
        out = np.zeros((batch, channels, 2))
        for b in range(batch):
            for c in range(channels):
                out[b, c] = largest_region_centroid(probabilities[b, c])
        return torch.from_numpy(out).float()


def largest_region_centroid(heatmap: np.ndarray) -> tuple[float, float]:
    """(x, y) centroid of the largest connected region above half the map's maximum."""
    regions, count = ndimage.label(heatmap > 0.5 * heatmap.max())
    if count == 0:  # a constant map: no peak to find
        return (heatmap.shape[1] - 1) / 2, (heatmap.shape[0] - 1) / 2
    sizes = np.bincount(regions.ravel())[1:]
    y, x = np.nonzero(regions == np.argmax(sizes) + 1)
    return float(x.mean()), float(y.mean())

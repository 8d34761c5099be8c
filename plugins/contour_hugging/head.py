"""The contour-hugging heatmap head (McCouat & Voiculescu, CVPR 2022).

Target: the single pixel at the rounded landmark. Each channel is a distribution over all
pixels (a softmax over the whole map), trained by the negative log-likelihood of the target
pixel, so the heatmap is free to take whatever shape the anatomy suggests. Decoding: the
argmax, optionally refined to sub-pixel precision by the probability-weighted mean of its
3 x 3 neighbourhood.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmbench.interfaces import HeadStrategy


class ContourHuggingHead(HeadStrategy):
    @dataclass
    class Params:
        subpixel: bool = False

    def targets(self, landmarks, size):
        """(B, N, 2) points -> (B, N) flat indices of their rounded pixels, clamped to the image."""
        height, width = size
        x = landmarks[..., 0].round().clamp(0, width - 1).long()
        y = landmarks[..., 1].round().clamp(0, height - 1).long()
        return y * width + x

    def loss(self, logits, targets):
        batch, channels = logits.shape[:2]
        return F.cross_entropy(logits.reshape(batch * channels, -1), targets.reshape(-1))

    def decode(self, logits):
        batch, channels, height, width = logits.shape
        flat = logits.reshape(batch, channels, -1)
        index = flat.argmax(dim=-1)
        points = torch.stack([index % width, index // width], dim=-1).float()
        if not self.params.subpixel:
            return points
        probabilities = flat.softmax(dim=-1).reshape(logits.shape)
        padded = F.pad(probabilities, (1, 1, 1, 1))
        offsets = torch.tensor([-1.0, 0.0, 1.0], device=logits.device)
        x, y = points[..., 0].long(), points[..., 1].long()
        window = torch.stack(
            [torch.stack([padded[b, c, y[b, c]:y[b, c] + 3, x[b, c]:x[b, c] + 3]
                          for c in range(channels)]) for b in range(batch)]
        )  # (B, N, 3, 3) around each argmax
        mass = window.sum(dim=(-2, -1)).clamp_min(1e-12)
        dx = (window.sum(dim=-2) * offsets).sum(dim=-1) / mass
        dy = (window.sum(dim=-1) * offsets).sum(dim=-1) / mass
        return points + torch.stack([dx, dy], dim=-1)

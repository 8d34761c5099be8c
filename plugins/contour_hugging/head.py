"""The contour-hugging heatmap head (McCouat & Voiculescu, CVPR 2022).

Target: the single pixel at the rounded landmark. Each channel is a distribution over all
pixels (a softmax over the whole map), trained by the negative log-likelihood of the target
pixel, so the heatmap is free to take whatever shape the anatomy suggests. Decoding: the
argmax, optionally refined to sub-pixel precision by the probability-weighted mean of its
3 x 3 neighbourhood. With ``temperature``, each landmark's logits are divided by a temperature
fitted on the validation split (the negative log-likelihood of its target pixels, minimised),
as the original work calibrates its heatmaps; the argmax does not move, the sub-pixel
refinement and the probabilities do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmbench.api import HeadStrategy


class ContourHuggingHead(HeadStrategy):
    @dataclass
    class Params:
        subpixel: bool = False
        temperature: bool = False  # fit a per-landmark temperature on the validation split

    def __init__(self, params=None):
        super().__init__(params)
        self.temperatures: torch.Tensor | None = None  # (N,), once calibrated

    @property
    def calibrates(self):
        return self.params.temperature

    def calibrate(self, logits, landmarks):
        batch, channels = logits.shape[:2]
        targets = self.targets(landmarks, tuple(logits.shape[-2:])).reshape(-1)
        flat = logits.reshape(batch * channels, -1)
        channel = torch.arange(channels).repeat(batch)
        log_t = torch.zeros(channels, requires_grad=True)
        optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=50, line_search_fn="strong_wolfe")

        def nll():
            optimiser.zero_grad()
            loss = F.cross_entropy(flat / log_t.exp()[channel, None], targets)
            loss.backward()
            return loss

        optimiser.step(nll)
        self.temperatures = log_t.detach().exp()

    def targets(self, landmarks, size):
        """(B, N, 2) points -> (B, N) flat indices of their rounded pixels, clamped to the image."""
        height, width = size
        x = landmarks[..., 0].round().clamp(0, width - 1).long()
        y = landmarks[..., 1].round().clamp(0, height - 1).long()
        return y * width + x

    def loss(self, logits, targets):
        batch, channels = logits.shape[:2]
        return F.cross_entropy(logits.reshape(batch * channels, -1), targets.reshape(-1))

    def probabilities(self, logits):
        """The head's own distribution: the softmax over each map, at the fitted temperature."""
        flat = logits.float().flatten(2)
        if self.temperatures is not None:
            flat = flat / self.temperatures.to(flat.device)[None, :, None]
        return flat.softmax(-1).view_as(logits)

    def exported_decoding(self):
        temperatures = None if self.temperatures is None else self.temperatures.tolist()
        return {"rule": "argmax", "subpixel": self.params.subpixel, "temperatures": temperatures}

    def decode(self, logits):
        batch, channels, height, width = logits.shape
        flat = logits.reshape(batch, channels, -1)
        index = flat.argmax(dim=-1)
        points = torch.stack([index % width, index // width], dim=-1).float()
        if not self.params.subpixel:
            return points
        if self.temperatures is not None:
            flat = flat / self.temperatures.to(flat.device)[None, :, None]
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

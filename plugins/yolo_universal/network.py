"""GU2Net (Zhu et al., MICCAI 2021) as its published code builds it (``gln.py`` around
``u2net.py``): a local U-Net and a global network whose sigmoid outputs are multiplied.

- Local U-Net: every 3x3 convolution is split into a dataset-specific depthwise part and a
  shared pointwise part; batch norm is per dataset, activations LeakyReLU; each dataset has
  its own 1x1 input and output convolutions. Widths double per level, the deepest is halved
  (bilinear upsampling, ``align_corners=True``), as the published U-Net.
- Global network, per dataset: the image and the local network's sigmoid heatmaps, each at
  a quarter of the resolution (nearest), through their own 3x3 convolutions, concatenated,
  then a stack of dilated 3x3 convolutions with batch norm and ReLU, and a 1x1 output,
  brought back to full resolution (nearest).

The forward pass returns the logit of the product, so that heads work on it as on any
other network's output (``sigmoid(logit) = local * global``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Module):
    """(dataset's depthwise 3x3, shared pointwise 1x1, dataset's batch norm, LeakyReLU) x 2."""

    def __init__(self, domains: int, cin: int, cout: int, mid: int | None = None):
        super().__init__()
        mid = mid or cout
        self.depthwise = nn.ModuleList(
            nn.ModuleList([nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.Conv2d(mid, mid, 3, padding=1, groups=mid)])
            for _ in range(domains)
        )
        self.pointwise = nn.ModuleList([nn.Conv2d(cin, mid, 1), nn.Conv2d(mid, cout, 1)])
        self.norms = nn.ModuleList(nn.ModuleList([nn.BatchNorm2d(mid), nn.BatchNorm2d(cout)]) for _ in range(domains))

    def forward(self, x, domain: int):
        for depthwise, pointwise, norm in zip(self.depthwise[domain], self.pointwise, self.norms[domain]):
            x = F.leaky_relu(norm(pointwise(depthwise(x))))
        return x


class LocalUNet(nn.Module):
    def __init__(self, landmark_counts: list[int], width: int, depth: int):
        super().__init__()
        domains = len(landmark_counts)
        widths = [width * 2**i for i in range(depth)]  # nominal; the deepest level holds half
        channels = widths[:-1] + [widths[-1] // 2]
        self.inputs = nn.ModuleList(nn.Conv2d(1, width, 1) for _ in range(domains))
        self.down = nn.ModuleList(
            DoubleConv(domains, channels[max(i - 1, 0)], c) for i, c in enumerate(channels)
        )
        self.up = nn.ModuleList(
            DoubleConv(domains, widths[i + 1], widths[i] // 2 if i else width, widths[i + 1] // 2)
            for i in reversed(range(depth - 1))
        )
        self.outputs = nn.ModuleList(nn.Conv2d(width, n, 1) for n in landmark_counts)

    def forward(self, x, domain: int):
        x = self.inputs[domain](x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if i else x, domain)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            x = block(torch.cat([skip, x], dim=1), domain)
        return self.outputs[domain](x)


class GlobalNet(nn.Module):
    def __init__(self, landmark_counts: list[int], channels: int, dilations: list[int]):
        super().__init__()
        self.image_in = nn.ModuleList(nn.Conv2d(1, channels // 2, 3, padding=1) for _ in landmark_counts)
        self.heatmaps_in = nn.ModuleList(nn.Conv2d(n, (channels + 1) // 2, 3, padding=1) for n in landmark_counts)
        self.stacks = nn.ModuleList(
            nn.Sequential(*(nn.Sequential(nn.Conv2d(channels, channels, 3, padding=d, dilation=d),
                                          nn.BatchNorm2d(channels), nn.ReLU()) for d in dilations))
            for _ in landmark_counts
        )
        self.outputs = nn.ModuleList(nn.Conv2d(channels, n, 1) for n in landmark_counts)

    def forward(self, x, heatmaps, domain: int):
        size = x.shape[-2:]
        x, heatmaps = (F.interpolate(t, scale_factor=0.25) for t in (x, heatmaps))
        fused = torch.cat([self.image_in[domain](x), self.heatmaps_in[domain](heatmaps)], dim=1)
        return F.interpolate(self.outputs[domain](self.stacks[domain](fused)), size=size)


class GU2Net(nn.Module):
    """``standardise``: each input image z-scored first, as the published data loaders do."""

    def __init__(self, landmark_counts: list[int], width: int, depth: int, global_channels: int, dilations: list[int],
                 standardise: bool = False):
        super().__init__()
        self.local = LocalUNet(landmark_counts, width, depth)
        self.globe = GlobalNet(landmark_counts, global_channels, dilations)
        self.standardise = standardise

    def forward(self, x: torch.Tensor, domain: int = 0) -> torch.Tensor:
        if self.standardise:
            mean, std = x.mean(dim=(1, 2, 3), keepdim=True), x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
            x = (x - mean) / (std + 1e-20)
        local = self.local(x, domain)
        coarse = self.globe(x, torch.sigmoid(local), domain)
        log_p = (F.logsigmoid(local) + F.logsigmoid(coarse)).clamp(max=-1e-6)  # log of the product
        return log_p - torch.log1p(-log_p.exp())  # its logit

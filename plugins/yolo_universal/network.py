"""GU2Net: a local U-Net of dataset-specific depthwise and shared pointwise convolutions,
multiplied by a global network of dilated convolutions at a quarter of the resolution.

Each dataset ("domain") has its own depthwise 3x3 kernels, its own output convolutions (one
channel per landmark) and sees its own landmarks; everything else is shared. The output is
the product of the two networks' sigmoids, returned as a logit so that heads work on it as on
any other network's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeparableConv(nn.Module):
    """Dataset-specific depthwise 3x3, shared pointwise 1x1, batch norm, ReLU."""

    def __init__(self, domains: int, cin: int, cout: int, dilation: int = 1):
        super().__init__()
        self.depthwise = nn.ModuleList(
            nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False) for _ in range(domains)
        )
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x, domain: int):
        return F.relu(self.norm(self.pointwise(self.depthwise[domain](x))))


class DoubleConv(nn.Module):
    def __init__(self, domains: int, cin: int, cout: int):
        super().__init__()
        self.first = SeparableConv(domains, cin, cout)
        self.second = SeparableConv(domains, cout, cout)

    def forward(self, x, domain: int):
        return self.second(self.first(x, domain), domain)


class LocalUNet(nn.Module):
    def __init__(self, domains: int, widths: list[int]):
        super().__init__()
        self.stem = nn.Conv2d(1, widths[0], 1)  # one channel has nothing to depthwise-separate
        self.down = nn.ModuleList(
            DoubleConv(domains, widths[max(i - 1, 0)], w) for i, w in enumerate(widths)
        )
        self.up = nn.ModuleList(
            DoubleConv(domains, widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1))
        )

    def forward(self, x, domain: int):
        skips = []
        x = self.stem(x)
        for i, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if i else x, domain)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1), domain)
        return x


class GlobalNet(nn.Module):
    def __init__(self, domains: int, channels: int, dilations: list[int]):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.body = nn.ModuleList(SeparableConv(domains, channels, channels, d) for d in dilations)

    def forward(self, x, domain: int):
        x = F.relu(self.stem(F.avg_pool2d(x, 4)))
        for conv in self.body:
            x = conv(x, domain)
        return x


class GU2Net(nn.Module):
    def __init__(self, landmark_counts: list[int], widths: list[int], global_channels: int, dilations: list[int]):
        super().__init__()
        domains = len(landmark_counts)
        self.local = LocalUNet(domains, widths)
        self.globe = GlobalNet(domains, global_channels, dilations)
        self.local_out = nn.ModuleList(nn.Conv2d(widths[0], n, 1) for n in landmark_counts)
        self.global_out = nn.ModuleList(nn.Conv2d(global_channels, n, 1) for n in landmark_counts)

    def forward(self, x: torch.Tensor, domain: int = 0) -> torch.Tensor:
        local = self.local_out[domain](self.local(x, domain))
        coarse = self.global_out[domain](self.globe(x, domain))
        coarse = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        log_p = (F.logsigmoid(local) + F.logsigmoid(coarse)).clamp(max=-1e-6)  # log of the product
        return log_p - torch.log1p(-log_p.exp())  # its logit

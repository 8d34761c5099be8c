"""SimCLR v2 (Chen et al., NeurIPS 2020): two views of each image, a 3-layer projection head,
and lightly's NT-Xent loss with the batch's other views as negatives.

- published recipe: ImageNet-strength views (crops from 20%, SimCLR's full colour jitter),
  the projection head as wide as the encoder's features;
- xray recipe: milder one-channel views, a 2048-wide head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform

from lmbench.api import PositiveFloat, PositiveInt
from lmbench_plugins.ssl.base import PooledEncoder, SslMethod, SslPretrainer
from lmbench_plugins.ssl.views import BatchViews, published_batch_view, published_view_args, xray_view_args


class SimCLRv2Method(SslMethod):
    def __init__(self, encoder: PooledEncoder, p: SimCLRv2.Params):
        super().__init__()
        self.student = encoder
        hidden = encoder.dim if p.recipe == "published" else p.hidden_dim
        self.projection = SimCLRProjectionHead(encoder.dim, hidden, p.output_dim, num_layers=3)
        self.criterion = NTXentLoss(temperature=p.temperature, gather_distributed=True)

    def loss(self, views, step, total):
        first, second = (self.projection(self.student(v)) for v in views)
        return self.criterion(first, second)

    def chance(self, batch):
        return math.log(2 * batch - 1)  # NT-Xent: each view against the 2N - 1 others


class SimCLRv2(SslPretrainer):
    @dataclass
    class Params(SslPretrainer.Params):
        output_dim: PositiveInt = 128
        hidden_dim: PositiveInt = 2048  # xray recipe; the published head is as wide as the encoder's features
        temperature: PositiveFloat = 0.5

    def method(self, encoder, size):
        p = self.params
        if self.batch_views:  # one transform drawn twice; bilinear crops, SimCLR's full jitter
            view = published_batch_view(size, (0.2, 1.0), blur_size=size, bicubic=False, jitter=(0.8, 0.8, 0.8, 0.2))
            transform = BatchViews([view, view])
        elif p.recipe == "published":
            transform = SimCLRTransform(input_size=size, min_scale=0.2, gaussian_blur=0.5, **published_view_args())
        else:
            transform = SimCLRTransform(input_size=size, min_scale=p.min_scale, **xray_view_args(size, p.jitter))
        return SimCLRv2Method(encoder, p), transform

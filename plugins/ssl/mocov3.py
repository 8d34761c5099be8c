"""MoCo v3 (Chen, Xie and He, ICCV 2021): a query encoder with projection and prediction heads
learns to match a momentum encoder's projection of another view.

- published recipe: MoCo v3's own contrastive loss (cross-entropy of each query against the
  batch's keys, summed over both directions; lightly has none), ImageNet-strength views as
  BYOL's (crops from 8%, the second view also solarised), momentum update at every batch;
- xray recipe: lightly's NT-Xent over both views, averaged over the directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import BYOLPredictionHead, MoCoProjectionHead
from lightly.models.utils import update_momentum
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, MoCoV2Transform
from lightly.utils import dist

from lmbench.api import PositiveFloat, PositiveInt, UnitInterval
from lmbench_plugins.ssl.base import PooledEncoder, SslMethod, SslPretrainer, momentum_copy
from lmbench_plugins.ssl.views import BatchViews, published_batch_view, published_view_args, xray_view_args


def moco_v3_loss(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """Each query's positive is the key of the same image; the batch's other keys (those of
    every process, in a data-parallel pre-training) are negatives."""
    if dist.world_size() > 1:
        keys = torch.cat(dist.gather(keys.contiguous()))
    logits = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T / temperature
    first = dist.rank() * len(queries)
    return F.cross_entropy(logits, torch.arange(first, first + len(queries), device=queries.device))


class MoCoV3Method(SslMethod):
    def __init__(self, encoder: PooledEncoder, p: MoCoV3.Params):
        super().__init__()
        self.student = encoder
        # v3: 3-layer projection and 2-layer prediction MLPs, with batch norm
        self.projection = MoCoProjectionHead(encoder.dim, p.hidden_dim, p.output_dim, num_layers=3, batch_norm=True)
        self.prediction = BYOLPredictionHead(p.output_dim, p.hidden_dim, p.output_dim)
        self.momentum_encoder = momentum_copy(self.student)
        self.momentum_projection = momentum_copy(self.projection)
        self.criterion = NTXentLoss(temperature=p.temperature, gather_distributed=True)
        self.params = p

    def loss(self, views, step, total):
        first, second = views
        queries = [self.prediction(self.projection(self.student(v))) for v in (first, second)]
        with torch.no_grad():
            keys = [self.momentum_projection(self.momentum_encoder(v)) for v in (first, second)]
        if self.params.recipe == "published":
            t = self.params.temperature
            return moco_v3_loss(queries[0], keys[1], t) + moco_v3_loss(queries[1], keys[0], t)
        return 0.5 * (self.criterion(queries[0], keys[1]) + self.criterion(queries[1], keys[0]))

    def chance(self, batch):
        if self.params.recipe == "published":
            return 2 * math.log(batch)  # each query against the N keys, both directions summed
        return math.log(2 * batch - 1)  # NT-Xent

    def update_momentum(self, step, total):
        update_momentum(self.student, self.momentum_encoder, self.params.momentum)
        update_momentum(self.projection, self.momentum_projection, self.params.momentum)


class MoCoV3(SslPretrainer):
    @dataclass
    class Params(SslPretrainer.Params):
        output_dim: PositiveInt = 256
        hidden_dim: PositiveInt = 2048
        temperature: PositiveFloat = 0.5
        momentum: UnitInterval = 0.999

    def method(self, encoder, size):
        p = self.params
        if self.batch_views:
            view = partial(published_batch_view, size, (0.08, 1.0), blur_size=size)
            transform = BatchViews([view(), view(solarize=True)])
        elif p.recipe == "published":
            common = dict(input_size=size, min_scale=0.08, gaussian_blur=0.5, **published_view_args())
            transform = BYOLTransform(BYOLView1Transform(**common, solarization_prob=0.0),
                                      BYOLView2Transform(**common, solarization_prob=0.2))
        else:
            transform = MoCoV2Transform(input_size=size, min_scale=p.min_scale, **xray_view_args(size, p.jitter))
        return MoCoV3Method(encoder, p), transform

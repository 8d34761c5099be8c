"""MoCo v3 (Chen, Xie and He, ICCV 2021): a query encoder with projection and prediction heads
learns to match a momentum encoder's projection of another view, with a symmetric
contrastive loss (lightly's NT-Xent; the other images of the batch are the negatives)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import BYOLPredictionHead, MoCoProjectionHead
from lightly.models.utils import update_momentum
from lightly.transforms import MoCoV2Transform

from lmbench_plugins.ssl.base import PooledEncoder, SslMethod, SslPretrainer, momentum_copy
from lmbench_plugins.ssl.views import xray_view_args


class MoCoV3Method(SslMethod):
    def __init__(self, encoder: PooledEncoder, p: MoCoV3.Params):
        super().__init__()
        self.student = encoder
        # v3: 3-layer projection and 2-layer prediction MLPs, with batch norm
        self.projection = MoCoProjectionHead(encoder.dim, p.hidden_dim, p.output_dim, num_layers=3, batch_norm=True)
        self.prediction = BYOLPredictionHead(p.output_dim, p.hidden_dim, p.output_dim)
        self.momentum_encoder = momentum_copy(self.student)
        self.momentum_projection = momentum_copy(self.projection)
        self.criterion = NTXentLoss(temperature=p.temperature)
        self.momentum = p.momentum

    def loss(self, views, step, total):
        first, second = views
        queries = [self.prediction(self.projection(self.student(v))) for v in (first, second)]
        with torch.no_grad():
            keys = [self.momentum_projection(self.momentum_encoder(v)) for v in (first, second)]
        return 0.5 * (self.criterion(queries[0], keys[1]) + self.criterion(queries[1], keys[0]))

    def after_step(self, step, total):
        update_momentum(self.student, self.momentum_encoder, self.momentum)
        update_momentum(self.projection, self.momentum_projection, self.momentum)


class MoCoV3(SslPretrainer):
    @dataclass
    class Params(SslPretrainer.Params):
        output_dim: int = 256
        hidden_dim: int = 2048
        temperature: float = 0.5
        momentum: float = 0.999

    def method(self, encoder, size):
        transform = MoCoV2Transform(input_size=size, min_scale=self.params.min_scale, **xray_view_args(size, self.params.jitter))
        return MoCoV3Method(encoder, self.params), transform

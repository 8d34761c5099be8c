"""SimCLR v2 (Chen et al., NeurIPS 2020): two views of each image, a 3-layer projection head,
and lightly's NT-Xent loss with the batch's other views as negatives."""

from __future__ import annotations

from dataclasses import dataclass

from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform

from lmbench_plugins.ssl.base import PooledEncoder, SslMethod, SslPretrainer
from lmbench_plugins.ssl.views import xray_view_args


class SimCLRv2Method(SslMethod):
    def __init__(self, encoder: PooledEncoder, p: SimCLRv2.Params):
        super().__init__()
        self.student = encoder
        self.projection = SimCLRProjectionHead(encoder.dim, p.hidden_dim, p.output_dim, num_layers=3)
        self.criterion = NTXentLoss(temperature=p.temperature)

    def loss(self, views, step, total):
        first, second = (self.projection(self.student(v)) for v in views)
        return self.criterion(first, second)


class SimCLRv2(SslPretrainer):
    @dataclass
    class Params(SslPretrainer.Params):
        output_dim: int = 128
        hidden_dim: int = 2048
        temperature: float = 0.5

    def method(self, encoder, size):
        transform = SimCLRTransform(input_size=size, min_scale=self.params.min_scale, **xray_view_args(size, self.params.jitter))
        return SimCLRv2Method(encoder, self.params), transform

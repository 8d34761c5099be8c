"""DINO (Caron et al., ICCV 2021): a student matches a momentum teacher's centred, sharpened
output across multi-crop views (2 global crops seen by both, local crops by the student only).
The teacher, updated only by the momentum average on a cosine schedule, is the encoder
handed to the detector, as in DINO's own evaluations."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import DINOLoss
from lightly.models.modules.heads import DINOProjectionHead
from lightly.models.utils import update_momentum
from lightly.transforms import DINOTransform
from lightly.utils.scheduler import cosine_schedule

from lmbench_plugins.ssl.base import PooledEncoder, SslMethod, SslPretrainer, momentum_copy
from lmbench_plugins.ssl.views import xray_view_args


class DinoMethod(SslMethod):
    def __init__(self, encoder: PooledEncoder, p: Dino.Params):
        super().__init__()
        self.student = encoder
        head = lambda: DINOProjectionHead(encoder.dim, p.hidden_dim, p.bottleneck_dim, p.output_dim)  # noqa: E731
        self.student_head = head()
        self.teacher = momentum_copy(self.student)
        self.teacher_head = momentum_copy(self.student_head, blank=head())
        self.criterion = DINOLoss(
            output_dim=p.output_dim, warmup_teacher_temp=p.teacher_temperature, teacher_temp=p.teacher_temperature,
            student_temp=p.student_temperature, center_momentum=p.center_momentum,
        )
        self.teacher_momentum = p.teacher_momentum

    def loss(self, views, step, total):
        with torch.no_grad():
            teacher_out = [self.teacher_head(self.teacher(v)) for v in views[:2]]
        student_out = [self.student_head(self.student(v)) for v in views]
        return self.criterion(teacher_out, student_out)

    def after_step(self, step, total):
        m = cosine_schedule(step - 1, total, self.teacher_momentum, 1.0)
        update_momentum(self.student, self.teacher, m)
        update_momentum(self.student_head, self.teacher_head, m)

    def encoder_weights(self):
        return self.teacher.encoder.state_dict()


class Dino(SslPretrainer):
    @dataclass
    class Params(SslPretrainer.Params):
        min_scale: float = 0.4  # global crops cover 40-100% of the image, local ones 5-40%
        output_dim: int = 256
        hidden_dim: int = 2048
        bottleneck_dim: int = 256
        student_temperature: float = 0.1
        teacher_temperature: float = 0.5
        center_momentum: float = 0.5
        teacher_momentum: float = 0.996
        local_views: int = 6
        local_crop_size: int = 0  # 0: 96/224 of the input size, as DINO, in multiples of 32

    profile_defaults = {  # two local crops instead of six on a CPU
        name: {**values, "local_views": 2} for name, values in SslPretrainer.profile_defaults.items()
    }

    def method(self, encoder, size):
        p = self.params
        local_size = p.local_crop_size or max(32, 32 * round(size * 96 / 224 / 32))
        transform = DINOTransform(
            global_crop_size=size, global_crop_scale=(p.min_scale, 1.0), local_crop_size=local_size,
            local_crop_scale=(0.05, p.min_scale), n_local_views=p.local_views, solarization_prob=0.0,
            **xray_view_args(size, p.jitter),
        )
        return DinoMethod(encoder, p), transform

"""DINO (Caron et al., ICCV 2021): a student matches a momentum teacher's centred, sharpened
output across multi-crop views (2 global crops seen by both, local crops by the student only).
lightly's loss updates the centre at every batch.

- published recipe: global crops from 4% of the image, six local crops of 3/7 of its size
  from 5% to all of it, ImageNet-strength jitter, the second global crop solarised; the
  teacher moves by a fixed momentum at every batch, and the student is handed on;
- xray recipe: milder one-channel views, a colder teacher (0.01) with lightly's centring
  (0.9), batch norm in the projection heads, the teacher's momentum on a cosine schedule
  after each optimiser step, and the student handed on (``RECIPES`` says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from lightly.loss import DINOLoss
from lightly.models.modules.heads import DINOProjectionHead
from lightly.models.utils import update_momentum
from lightly.transforms import DINOTransform
from lightly.utils.scheduler import cosine_schedule

from lmbench.api import LmbenchError, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval
from lmbench_plugins.ssl.base import PooledEncoder, SslMethod, SslPretrainer, momentum_copy
from lmbench_plugins.ssl.views import BatchViews, published_batch_view, published_view_args, xray_view_args

#: the published builder's default image_size, which its main.py never overrides
PUBLISHED_CROP = 224

#: each recipe's teacher temperature, centre momentum and head; a param set in the matrix wins.
#: The x-ray recipe's, measured on ISBI 2015 (smoke profile, 150 steps; README): at the
#: published 0.5 / 0.5, and at lightly's 0.04 / 0.9 even over 500 steps, the loss stays at
#: chance, ln(output_dim); without batch norm in the head the outputs collapse within 30
#: steps (radiographs look alike, so their pooled features share one large component); a
#: teacher of 0.01 sharpens the small differences between images enough to learn from. The
#: student is handed on: after a CPU budget of steps at momentum 0.996 and up, the teacher is
#: still mostly its initialisation (and detected worst: 23.6 mm at 1 label, the student 18.6).
RECIPES = {
    "published": {"teacher_temperature": 0.5, "center_momentum": 0.5, "head_batch_norm": False, "hand_on": "student"},
    "xray": {"teacher_temperature": 0.01, "center_momentum": 0.9, "head_batch_norm": True, "hand_on": "student"},
}


class DinoMethod(SslMethod):
    def __init__(self, encoder: PooledEncoder, p: Dino.Params):
        super().__init__()
        self.student = encoder
        self.recipe = recipe = {**RECIPES[p.recipe], **{k: v for k, v in vars(p).items()
                                                        if k in RECIPES[p.recipe] and v is not None}}
        head = lambda: DINOProjectionHead(  # noqa: E731
            encoder.dim, p.hidden_dim, p.bottleneck_dim, p.output_dim, batch_norm=recipe["head_batch_norm"])
        self.student_head = head()
        self.teacher = momentum_copy(self.student)
        self.teacher_head = momentum_copy(self.student_head, blank=head())
        self.criterion = DINOLoss(
            output_dim=p.output_dim, warmup_teacher_temp=recipe["teacher_temperature"],
            teacher_temp=recipe["teacher_temperature"], student_temp=p.student_temperature,
            center_momentum=recipe["center_momentum"],
        )
        self.params = p

    def loss(self, views, step, total):
        with torch.no_grad():
            teacher_out = [self.teacher_head(self.teacher(v)) for v in views[:2]]
        student_out = [self.student_head(self.student(v)) for v in views]
        return self.criterion(teacher_out, student_out)

    def chance(self, batch):
        return math.log(self.params.output_dim)  # uniform teacher and student

    def update_momentum(self, step, total):
        m = self.params.teacher_momentum
        if not self.per_batch:
            m = cosine_schedule(step - 1, total, m, 1.0)
        update_momentum(self.student, self.teacher, m)
        update_momentum(self.student_head, self.teacher_head, m)

    def handed_on(self):
        return self.student if self.recipe["hand_on"] == "student" else self.teacher


class Dino(SslPretrainer):
    @dataclass
    class Params(SslPretrainer.Params):
        min_scale: UnitInterval = 0.4  # xray recipe: global crops cover 40-100% of the image, local ones 5-40%
        output_dim: PositiveInt = 256
        hidden_dim: PositiveInt = 2048
        bottleneck_dim: PositiveInt = 256
        student_temperature: PositiveFloat = 0.1
        teacher_temperature: PositiveFloat | None = None  # None: the recipe's (RECIPES)
        center_momentum: UnitInterval | None = None
        head_batch_norm: bool | None = None  # batch norm in the projection head's MLP
        hand_on: Literal["student", "teacher"] | None = None  # the encoder the detector starts from
        teacher_momentum: UnitInterval = 0.996
        local_views: NonNegativeInt = 6
        # 0: the recipe's. published: the published code's fixed 224 px global and 96 px (3/7 of
        # 224) local crops at any input size; xray: global at the input size, local 96/224 of it
        global_crop_size: NonNegativeInt = 0
        local_crop_size: NonNegativeInt = 0

    # two local crops instead of six on a CPU
    profile_defaults = {name: {**values, "local_views": 2} for name, values in SslPretrainer.profile_defaults.items()}
    # the smoke profile's loss is flat after 30% of the shared 150 steps (docs/benchmarks.md)
    profile_defaults["smoke"]["iterations"] = 75

    def method(self, encoder, size):
        p, batch_views = self.params, self.batch_views
        if p.recipe == "published":
            global_size = p.global_crop_size or PUBLISHED_CROP
            local_size = p.local_crop_size or int(global_size * 3 / 7)
            stride = getattr(encoder.encoder, "output_stride", 32)  # the encoder pools smaller crops to nothing
            if local_size < stride:
                raise LmbenchError(f"dino: local crops of {local_size} px (3/7 of {global_size} px) are smaller than "
                                   f"the encoder's output stride ({stride} px); set local_crop_size = {stride} or more")
            if batch_views:  # blur kernels follow the builder's image_size, local crops included
                view = partial(published_batch_view, blur_size=global_size)
                transform = BatchViews([view(global_size, (0.04, 1.0)), view(global_size, (0.04, 1.0), solarize=True),
                                        *[view(local_size, (0.05, 1.0)) for _ in range(p.local_views)]])
                return DinoMethod(encoder, p), transform
            transform = DINOTransform(
                global_crop_size=global_size, global_crop_scale=(0.04, 1.0), local_crop_size=local_size,
                local_crop_scale=(0.05, 1.0), n_local_views=p.local_views, cj_strength=0.5, gaussian_blur=(0.5, 0.5, 0.5),
                solarization_prob=0.2, **published_view_args(),
            )
            return DinoMethod(encoder, p), transform
        local_size = p.local_crop_size or max(32, 32 * round(size * 96 / 224 / 32))
        transform = DINOTransform(
            global_crop_size=p.global_crop_size or size, global_crop_scale=(p.min_scale, 1.0), local_crop_size=local_size,
            local_crop_scale=(0.05, p.min_scale), n_local_views=p.local_views, solarization_prob=0.0,
            **xray_view_args(size, p.jitter),
        )
        return DinoMethod(encoder, p), transform

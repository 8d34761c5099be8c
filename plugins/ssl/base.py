"""What the three self-supervised baselines share: the encoder they train, the training loop
in optimiser steps with gradient accumulation, and checkpoints at chosen iterations.

Each method is an ``SslMethod``: a module holding the encoder and its heads, which turns one
batch of views into a loss and updates its momentum networks after each optimiser step. Only
the encoder's weights are handed on; the U-Net's decoder starts fresh.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field

import torch
from lightly.models.utils import deactivate_requires_grad
from torch import nn

from lmbench.api import LmbenchError, PretrainContext, Pretrainer, train_steps
from lmbench_plugins.ssl.views import view_batches


class PooledEncoder(nn.Module):
    """An smp encoder reduced to one vector per image: its deepest features, average-pooled."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.dim = encoder.out_channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[-1].mean(dim=(2, 3))


def momentum_copy(module: nn.Module, blank: nn.Module | None = None) -> nn.Module:
    """A frozen copy of ``module`` for lightly's ``update_momentum``. Pass a ``blank``
    instance of the same architecture for modules that cannot be deep-copied (weight norm)."""
    copy = deepcopy(module) if blank is None else blank
    copy.load_state_dict(module.state_dict())
    deactivate_requires_grad(copy)
    return copy


class SslMethod(nn.Module):
    """One self-supervised method around ``self.student``, the encoder being trained.

    Momentum networks normalise with the statistics of their own batches, as in the methods'
    own code; their parameters change only through lightly's ``update_momentum``.
    """

    student: PooledEncoder

    def loss(self, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, step: int, total: int) -> None:
        """Called after each optimiser step (momentum updates)."""

    def encoder_weights(self) -> dict[str, torch.Tensor]:
        """The encoder to hand to the detector."""
        return self.student.encoder.state_dict()


class SslPretrainer(Pretrainer):
    """Base of the lightly baselines: subclasses add their hyperparameters and ``method``."""

    @dataclass
    class Params:
        iterations: int = 10000  # the checkpoint the detector starts from
        sweep: list[int] = field(default_factory=list)  # more checkpoints of the same run
        batch_size: int = 4
        accumulation: int = 8
        lr: float = 1e-4
        weight_decay: float = 0.01  # AdamW's default
        min_scale: float = 0.4  # smallest random-resized-crop area, as a fraction of the image
        jitter: float = 0.5  # strength of the brightness and contrast jitter (lightly's cj_strength)
        workers: int = 0  # data-loading processes for the views

    profile_defaults = {
        "smoke": {"iterations": 150, "batch_size": 16, "accumulation": 1, "lr": 1e-3},
        "quick": {"iterations": 200, "batch_size": 16, "accumulation": 1, "lr": 5e-4},
    }
    unkeyed_params = frozenset({"workers"})
    checkpoint_param = "iterations"
    produces = "unet-encoder"

    def method(self, encoder: PooledEncoder, size: int) -> tuple[SslMethod, object]:
        """The method around ``encoder`` and its lightly view transform for ``size`` px images."""
        raise NotImplementedError

    def pretrain(self, context: PretrainContext):
        p, device = self.params, context.device
        if len(context.images) < 2:
            raise LmbenchError(f"{self.name}: the pre-training pool needs at least 2 images, it has {len(context.images)}")
        torch.manual_seed(context.seed)
        size = context.images.shape[-1]
        encoder = PooledEncoder(context.backbone.build_part("unet-encoder", context.num_landmarks, size))
        method, transform = self.method(encoder, size)
        method.to(device).train()
        optimiser = torch.optim.AdamW(
            [q for q in method.parameters() if q.requires_grad], lr=p.lr, weight_decay=p.weight_decay
        )
        checkpoints = self.checkpoints()
        batches = iter(view_batches(context.images, transform, p.batch_size, checkpoints[-1] * p.accumulation,
                                    context.seed, p.workers))

        def batch_loss(step, total):
            return method.loss([v.to(device, non_blocking=True) for v in next(batches)], step, total)

        self.losses = train_steps(  # mean loss per optimiser step
            context, optimiser, batch_loss, who=self.name, checkpoints=checkpoints, weights=method.encoder_weights,
            accumulation=p.accumulation, after_step=method.after_step,
        )
        return None

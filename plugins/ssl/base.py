"""What the three self-supervised baselines share: the encoder they train, the training loop
in optimiser steps with gradient accumulation, and checkpoints at chosen iterations.

Each method is an ``SslMethod``: a module holding the encoder and its heads, which turns one
batch of views into a loss and updates its momentum networks. Only the encoder's weights
are handed on; the U-Net's decoder starts fresh.

Two recipes (``recipe``):

- ``"published"``, the authors' ``ssl_pretraining/`` code: ImageNet-strength views of the
  gray image repeated to 3 channels (normalised with mean 0.5 and ImageNet's std) through a
  3-channel stem, gradients summed over the accumulated batches, momentum networks updated
  at every batch (before the keys are computed), and each method's own details (below).
  The stem is folded back to one channel (summed over its input channels, as smp does for
  3-channel weights), which is the same function on a gray image; a backbone built with a
  3-channel stem (smp-unet's ``in_channels = 3``, the published downstream) keeps it.
- ``"xray"``: milder one-channel views (``views.py`` says why), gradients averaged, momentum
  updates after each optimiser step.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field
from typing import Literal

import torch
from lightly.models.utils import deactivate_requires_grad
from torch import nn

from lmbench.api import (
    LmbenchError,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PretrainContext,
    Pretrainer,
    UnitInterval,
    train_steps,
)
from lmbench_plugins.ssl.views import view_batches


class PooledEncoder(nn.Module):
    """An smp encoder reduced to one vector per image: its deepest features, average-pooled;
    with ``relu``, rectified first, as torchvision's DenseNet does after its final norm (the
    published SSL features; a ResNet's last features are rectified already)."""

    def __init__(self, encoder: nn.Module, relu: bool = False):
        super().__init__()
        self.encoder, self.relu = encoder, relu
        self.dim = encoder.out_channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)[-1]
        return (torch.relu(features) if self.relu else features).mean(dim=(2, 3))


def momentum_copy(module: nn.Module, blank: nn.Module | None = None) -> nn.Module:
    """A frozen copy of ``module`` for lightly's ``update_momentum``. Pass a ``blank``
    instance of the same architecture for modules that cannot be deep-copied (weight norm)."""
    copy = deepcopy(module) if blank is None else blank
    copy.load_state_dict(module.state_dict())
    deactivate_requires_grad(copy)
    return copy


def widen_stem(encoder: nn.Module) -> str | None:
    """Make the encoder's one-channel stem take 3 channels, each with a third of its weights
    (the same function on a gray image repeated); returns its state-dict name. None for a stem
    built with 3 channels (the backbone's ``in_channels = 3``), which keeps its own."""
    name, conv = next((n, m) for n, m in encoder.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == 3:
        return None
    conv.weight = nn.Parameter(conv.weight.detach().repeat(1, 3, 1, 1) / 3)
    conv.in_channels = 3
    return f"{name}.weight"


class SslMethod(nn.Module):
    """One self-supervised method around ``self.student``, the encoder being trained.

    Momentum networks normalise with the statistics of their own batches, as in the methods'
    own code; their parameters change only through lightly's ``update_momentum``, at every
    batch (``per_batch``, the published code) or after each optimiser step.
    """

    student: PooledEncoder
    per_batch: bool = False
    stem: str | None = None  # a widened stem's weight, folded back to one channel on the way out

    def loss(self, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
        """The loss of this process's share of a batch of views; a contrastive loss takes its
        negatives from every process's share (lightly's ``gather_distributed``)."""
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
        return self.loss(views, step, total)  # so that DistributedDataParallel sees the backward coming

    def chance(self, batch: int) -> float:
        """The loss of a network that learned nothing (every output alike), for ``batch`` images."""
        raise NotImplementedError

    def update_momentum(self, step: int, total: int) -> None:
        """Move the momentum networks towards the student."""

    def after_step(self, step: int, total: int) -> None:
        if not self.per_batch:
            self.update_momentum(step, total)

    def handed_on(self) -> PooledEncoder:
        """The encoder the detector starts from."""
        return self.student

    def encoder_weights(self) -> dict[str, torch.Tensor]:
        weights = dict(self.handed_on().encoder.state_dict())
        if self.stem is not None:
            weights[self.stem] = weights[self.stem].sum(dim=1, keepdim=True)
        return weights


class SslPretrainer(Pretrainer):
    """Base of the lightly baselines: subclasses add their hyperparameters and ``method``."""

    data_parallel = True

    @dataclass
    class Params:
        iterations: PositiveInt = 10000  # the checkpoint the detector starts from
        sweep: list[int] = field(default_factory=list)  # more checkpoints of the same run
        batch_size: PositiveInt = 4
        accumulation: PositiveInt = 8
        lr: PositiveFloat = 1e-4
        weight_decay: NonNegativeFloat = 0.01  # AdamW's default
        recipe: Literal["published", "xray"] = "published"
        min_scale: UnitInterval = 0.4  # xray recipe: smallest random-resized-crop area, as a fraction of the image
        jitter: NonNegativeFloat = 0.5  # xray recipe: strength of the brightness and contrast jitter (lightly's cj_strength)
        # None: the recipe's. published: "batch", the published code's torchvision transforms on the
        # batch tensor, one draw for a micro-batch; "image": lightly's, a draw per image (xray: always)
        views: Literal["batch", "image"] | None = None
        # None: the recipe's (published: true). Rectify the deepest features before pooling them
        feature_relu: bool | None = None
        # None: the recipe's (published: "epochs", shuffled passes dropping the short last batch;
        # xray: "replacement", every batch drawn from the whole pool)
        sampling: Literal["epochs", "replacement"] | None = None
        workers: NonNegativeInt = 0  # data-loading processes for the views

    profile_defaults = {
        "smoke": {"iterations": 150, "batch_size": 16, "accumulation": 1, "lr": 1e-3, "recipe": "xray"},
        "quick": {"iterations": 200, "batch_size": 16, "accumulation": 1, "lr": 5e-4, "recipe": "xray"},
    }
    unkeyed_params = frozenset({"workers"})
    checkpoint_param = "iterations"
    produces = "unet-encoder"

    def method(self, encoder: PooledEncoder, size: int) -> tuple[SslMethod, object]:
        """The method around ``encoder`` and its view transform for ``size`` px images,
        following ``params.recipe``: lightly's transform of one image, or, with batch views,
        ``BatchViews`` of the published code's transforms."""
        raise NotImplementedError

    @property
    def batch_views(self) -> bool:
        p = self.params
        if p.views == "batch" and p.recipe != "published":
            raise LmbenchError(f"{self.name}: views = \"batch\" is the published recipe's; the xray recipe draws "
                               f"per image")
        return p.recipe == "published" and p.views != "image"

    def pretrain(self, context: PretrainContext):
        p, device = self.params, context.device
        if len(context.images) < 2:
            raise LmbenchError(f"{self.name}: the pre-training pool needs at least 2 images, it has {len(context.images)}")
        torch.manual_seed(context.seed)
        size = context.images.shape[-1]
        published = p.recipe == "published"
        part = context.backbone.build_part("unet-encoder", context.num_landmarks, size)
        stem = widen_stem(part) if published else None
        relu = published if p.feature_relu is None else p.feature_relu
        method, transform = self.method(PooledEncoder(part, relu), size)
        method.stem, method.per_batch = stem, published
        method.to(device).train()
        model = context.parallel(method)
        optimiser = torch.optim.AdamW(
            [q for q in method.parameters() if q.requires_grad], lr=p.lr, weight_decay=p.weight_decay, fused=True
        )
        checkpoints = self.checkpoints()
        batches = view_batches(context.images, transform, p.batch_size, checkpoints[-1] * p.accumulation,
                               context.seed, p.workers, channels=3 if published else 1,
                               epochs=(p.sampling or ("epochs" if published else "replacement")) == "epochs")

        def batch_loss(step, total):
            if method.per_batch:
                method.update_momentum(step, total)
            return model(list(context.shard(*(v.to(device, non_blocking=True) for v in next(batches)))), step, total)

        self.losses = train_steps(  # mean loss per optimiser step
            context, optimiser, batch_loss, who=self.name, checkpoints=checkpoints, weights=method.encoder_weights,
            accumulation=p.accumulation, accumulate="sum" if published else "mean", after_step=method.after_step,
            chance=method.chance(p.batch_size), state={"method": method, "views": batches},
        )
        return None

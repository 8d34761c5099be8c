"""The shared fine-tuning engine: every backbone and head is trained and tested the same way.

AdamW, ReduceLROnPlateau on the validation loss (or a warm-up and cosine decay), early
stopping, gradient accumulation, and the weights of the best validation epoch kept for
testing. bf16 autocast on CUDA. A backbone's own recipe (Adam, a cyclic learning rate, a
summed loss) is switched on by the same settings.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from lmbench.config.profiles import FinetuneConfig
from lmbench.core.errors import LmbenchError
from lmbench.core.interfaces import HeadStrategy
from lmbench.data.prepare import Prepared
from lmbench.evaluate import conformal
from lmbench.train import timing
from lmbench.train.augment import augment

#: (epoch, epochs, train loss, validation loss)
EpochCallback = Callable[[int, int, float, float], None]


@dataclass
class FinetuneResult:
    epochs: int
    best_epoch: int
    best_val_loss: float
    history: list[tuple[float, float, float]] = field(default_factory=list)  # (train loss, val loss, lr) per epoch


def autocast(device: torch.device, precision: str = "bf16"):
    """bf16 autocast on CUDA unless ``precision`` is "fp32"; CPUs always compute in fp32."""
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def tf32(enabled: bool = True):
    """TF32 matmuls and cuDNN convolutions on (or off) for one stage, and the two global flags
    as they were after it: a flag left set would change the numbers of the next stage in the
    process (a fine-tuning in fp32 after a bf16 pre-training), so results would depend on
    what the cache held."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _epoch_order(n: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` indices into ``n`` samples: whole shuffled passes, the last one cut short."""
    passes = [torch.randperm(n, generator=generator) for _ in range(math.ceil(count / n))]
    return torch.cat(passes)[:count]


def _interleave(per_domain: list[list], order: str, generator: torch.Generator) -> list:
    """One epoch's batches of several datasets: in turn, or all in one shuffled order."""
    if order == "shuffled" and len(per_domain) > 1:
        batches = [b for domain in per_domain for b in domain]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return [b for turn in itertools.zip_longest(*per_domain) for b in turn if b is not None]


def _warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """The learning rate's factor after ``step`` optimiser steps: up linearly for ``warmup``
    steps, then down along a half cosine to zero at ``total`` (lightly's CosineWarmupScheduler
    reaches zero a step early, so its last step would not train)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return factor


def _batch_loss(model: nn.Module, head: HeadStrategy, images, landmarks, device, config: FinetuneConfig) -> torch.Tensor:
    images, landmarks = images.to(device), landmarks.to(device)
    targets = head.targets(landmarks, tuple(images.shape[-2:]))
    with autocast(device, config.precision):
        logits = model(images)
    loss = head.loss(logits.float(), targets)
    return loss * targets.numel() if config.loss_reduction == "sum" else loss


@torch.no_grad()
def validation_loss(model: nn.Module, head: HeadStrategy, data: Prepared, config: FinetuneConfig, device) -> float:
    """The mean loss per validation image, or per batch (``validation_average = "batch"``, the
    published code's: a short last batch then weighs as much as a full one)."""
    model.eval()
    losses, sizes = [], []
    batching_free = config.validation_average == "image" and config.loss_reduction == "mean"
    batch = config.eval_batch_size if batching_free else config.batch_size
    for start in range(0, len(data.ids), batch):
        sl = slice(start, start + batch)
        losses.append(float(_batch_loss(model, head, data.images[sl], data.landmarks[sl], device, config)))
        sizes.append(len(data.ids[sl]))
    weights = sizes if config.validation_average == "image" else [1] * len(sizes)
    return sum(w * loss for w, loss in zip(weights, losses)) / sum(weights)


class DomainView(nn.Module):
    """One dataset's view of a network trained on several: ``forward(x)`` is ``model(x, domain)``."""

    def __init__(self, model: nn.Module, domain: int):
        super().__init__()
        self.model, self.domain = model, domain

    def forward(self, x):
        return self.model(x, domain=self.domain)


def finetune(
    model: nn.Module,
    head: HeadStrategy,
    train: Prepared | list[Prepared],
    val: Prepared | list[Prepared],
    config: FinetuneConfig,
    lr: float,
    device: torch.device,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> FinetuneResult:
    """Train ``model`` in place; on return it holds the best validation epoch's weights.

    Lists of splits train one network on several datasets at once (``model(x, domain)``): each
    batch comes from one dataset, in turn or in a shuffled order (``joint_order``), and the
    validation loss is their mean, weighted by images or with each dataset alike (``joint_validation``).
    """
    joint = isinstance(train, list)
    trains, vals = (train, val) if joint else ([train], [val])
    views = [DomainView(model, d) for d in range(len(trains))] if joint else [model]
    if not all(t.ids for t in trains) or not all(v.ids for v in vals):
        raise LmbenchError("fine-tuning needs at least one training and one validation image")
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    optimiser_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel over every tensor, the same update to rounding; on a CPU its step is
    # 5x faster than the loop over tensors, which took a fifth of a smoke fine-tuning step
    optimiser = optimiser_class(model.parameters(), lr=lr, weight_decay=config.weight_decay, fused=True)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=config.plateau_factor, patience=config.plateau_patience
    )
    cyclic = torch.optim.lr_scheduler.CyclicLR(
        optimiser, base_lr=lr, max_lr=config.cyclic_max_lr, step_size_up=config.cyclic_half_period,
        mode="triangular2", cycle_momentum=False,
    ) if config.schedule == "cyclic" else None
    per_epoch = [config.samples_per_epoch or len(t.ids) for t in trains]
    steps_per_epoch = math.ceil(sum(math.ceil(n / config.batch_size) for n in per_epoch) / config.accumulation)
    cosine = torch.optim.lr_scheduler.LambdaLR(
        optimiser, _warmup_cosine(config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch)
    ) if config.schedule == "cosine" else None
    stepped = cyclic or cosine  # schedules that move every optimiser step
    result = FinetuneResult(epochs=0, best_epoch=0, best_val_loss=math.inf)
    best_state = copy.deepcopy(model.state_dict())
    for epoch in range(1, config.epochs + 1):
        model.train()
        per_domain = [
            [(d, index) for index in _epoch_order(len(t.ids), n, generator).split(config.batch_size)]
            for d, (t, n) in enumerate(zip(trains, per_epoch))
        ]
        batches = _interleave(per_domain, config.joint_order, generator)
        train_loss = 0.0
        optimiser.zero_grad(set_to_none=True)
        for step, (d, index) in enumerate(batches, start=1):
            images, landmarks = trains[d].images[index], trains[d].landmarks[index]
            if config.augment:
                pairs = [augment(im, pts, config, generator) for im, pts in zip(images, landmarks)]
                images = torch.stack([im for im, _ in pairs])
                landmarks = torch.stack([pts for _, pts in pairs])
            loss = _batch_loss(views[d], head, images, landmarks, device, config)
            if not torch.isfinite(loss):
                raise LmbenchError(f"training loss became {float(loss)} at epoch {epoch}, step {step}")
            (loss / config.accumulation).backward()
            if step % config.accumulation == 0 or step == len(batches):
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
                if stepped is not None:
                    stepped.step()
            train_loss += loss.item() * len(index)
        train_loss /= sum(per_epoch)
        result.epochs = epoch
        if (epoch - 1) % config.validate_every and epoch != config.epochs:  # no validation pass this epoch
            result.history.append((train_loss, math.nan, optimiser.param_groups[0]["lr"]))
            if on_epoch:
                on_epoch(epoch, config.epochs, train_loss, result.best_val_loss)
            continue
        with timing.stage("validation"):
            weights = [len(data.ids) if config.joint_validation == "images" else 1 for data in vals]
            val_loss = sum(validation_loss(v, head, data, config, device) * w
                           for v, data, w in zip(views, vals, weights)) / sum(weights)
        if not math.isfinite(val_loss):
            raise LmbenchError(f"validation loss became {val_loss} at epoch {epoch}")
        result.history.append((train_loss, val_loss, optimiser.param_groups[0]["lr"]))  # the epoch's last lr
        if stepped is None:
            plateau.step(val_loss)
        if val_loss < result.best_val_loss * (1 - config.min_delta):
            result.best_val_loss, result.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        if on_epoch:
            on_epoch(epoch, config.epochs, train_loss, val_loss)
        if epoch - result.best_epoch >= config.early_stopping:
            break
    model.load_state_dict(best_state)
    return result


@torch.no_grad()
def logits(model: nn.Module, images: torch.Tensor, batch_size: int, device, precision: str = "bf16"):
    """(M, 1, S, S) images -> (M, N, S, S) float32 logits, batch by batch (on the device)."""
    model.eval().to(device)
    for batch in images.split(batch_size):
        with autocast(device, precision):
            yield model(batch.to(device)).float()


def predict(model: nn.Module, head: HeadStrategy, images: torch.Tensor, batch_size: int, device,
            precision: str = "bf16") -> tuple[torch.Tensor, torch.Tensor]:
    """(M, 1, S, S) images -> (M, N, 2) landmarks and (M, N, 2, 2) spatial covariances of their
    heatmaps (``head.probabilities``), in input pixels."""
    points, covariances = [], []
    for out in logits(model, images, batch_size, device, precision):
        points.append(head.decode(out).cpu())
        covariances.append(conformal.covariance(head.probabilities(out).cpu()))
    return torch.cat(points), torch.cat(covariances)

"""The optimiser-step loop every pretrainer shares: the built-ins use it, and a plugin may.

An iteration is an optimiser step, made of ``accumulation`` batches whose gradients are
averaged (``accumulate = "mean"``) or summed (``"sum"``, as some published code does). Each
batch's loss is computed under bf16 autocast on CUDA (``precision = "fp32"`` to stay in
fp32) and checked to be finite; gradients are clipped by value or norm if asked; after
each step ``after_step`` runs (momentum or EMA updates), the step's loss goes to
``context.record_loss`` with ``chance`` (the loss of a model that learned nothing, for the
health check), progress is reported, the weights of each requested checkpoint go to
``context.save_checkpoint``, and the loop's whole state to ``context.resume_path`` every
``context.resume_every`` seconds, from which a rerun goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lmbench.core.errors import CorruptFile, LmbenchError
from lmbench.core.interfaces import PretrainContext
from lmbench.store import integrity, layout
from lmbench.train import resume
from lmbench.train.engine import autocast

log = logging.getLogger("lmbench")


def train_steps(
    context: PretrainContext,
    optimiser: torch.optim.Optimizer,
    batch_loss: Callable[[int, int], torch.Tensor],
    *,
    who: str,
    checkpoints: list[int],
    weights: Callable[[], dict[str, torch.Tensor]],
    accumulation: int = 1,
    accumulate: Literal["mean", "sum"] = "mean",
    clip: Literal["value", "norm", "none"] = "none",
    clip_at: float = 1.0,
    precision: Literal["bf16", "fp32"] = "bf16",
    after_step: Callable[[int, int], None] | None = None,
    iterations_per_step: int = 1,
    chance: float | None = None,
    state: dict[str, Any] | None = None,
    micro_batches: Callable[[int], int] | None = None,
) -> list[float]:
    """Train until the last of ``checkpoints`` (in iterations) and return the mean loss of
    each optimiser step. ``batch_loss(step, total)`` draws one batch and returns its loss;
    ``weights()`` is the state dict a checkpoint keeps (the part the pretrainer produces);
    one optimiser step counts as ``iterations_per_step`` iterations (larger batches).
    ``after_step(step, total)`` runs after each optimiser step, ``step`` counting them from 1
    to ``total`` (iterations divided by ``iterations_per_step``). ``micro_batches(step)``, if
    given, is the number of batches of that step instead of ``accumulation`` (a step forced
    at an epoch's end on the batches left, as some published loops do).

    ``state`` names everything besides the optimiser that a restart must get back: the
    networks, EMA and momentum copies, ``torch.Generator`` s and data orders (objects with
    ``state_dict``/``load_state_dict``). Given it and ``context.resume_path``, the loop writes
    them there every ``context.resume_every`` seconds and, finding the file at the start,
    goes on from its step with the same result as an uninterrupted run; without ``state`` a
    stopped pre-training starts again."""
    parameters = [p for group in optimiser.param_groups for p in group["params"]]
    total = checkpoints[-1] // iterations_per_step
    objects = {"optimiser": optimiser, **(state or {})}
    path = context.resume_path if state is not None else None  # without its networks, no state to resume
    losses: list[float] = []
    if path is not None and path.exists():
        try:
            losses = resume.load(path, objects)["losses"]
            log.warning("%s: resuming from iteration %d of %d (%s)", who, len(losses) * iterations_per_step,
                        total * iterations_per_step, path)
        except CorruptFile as exc:  # never read: the pre-training starts again
            log.warning("%s: set aside; starting again", exc)
            integrity.set_aside(path, layout.cache_root_of(path))
        for step, earlier in enumerate(losses, start=1):
            context.record_loss(step * iterations_per_step, earlier, chance)
    saved_at = time.monotonic()
    for step in range(len(losses) + 1, total + 1):
        step_loss, count = 0.0, micro_batches(step) if micro_batches is not None else accumulation
        for _ in range(count):
            with autocast(context.device, precision):
                loss = batch_loss(step, total).float()
            (loss / count if accumulate == "mean" else loss).backward()
            value = loss.detach().clone()
            if context.world_size > 1:  # the global batch's loss: the mean of the processes' shares
                dist.all_reduce(value)
                value /= context.world_size
            if not torch.isfinite(value):
                raise LmbenchError(f"{who}: loss became {value.item()} at iteration {step * iterations_per_step}")
            step_loss += value.item() / count
        if clip == "value":
            nn.utils.clip_grad_value_(parameters, clip_at)
        elif clip == "norm":
            nn.utils.clip_grad_norm_(parameters, clip_at)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step(step, total)
        losses.append(step_loss)
        context.record_loss(step * iterations_per_step, step_loss, chance)
        if step * iterations_per_step in checkpoints:
            kept = {name: tensor.detach().clone() for name, tensor in weights().items()}
            context.save_checkpoint(step * iterations_per_step, kept)
        if path is not None and context.rank == 0 and step < total and time.monotonic() - saved_at >= context.resume_every:
            resume.save(path, objects, {"losses": losses})
            saved_at = time.monotonic()
        context.progress(step, total)
    return losses


def ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights: call ``.update_parameters(model)``
    after each step (``after_step``) and read ``.module``."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

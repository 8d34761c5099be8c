"""DDPM self-supervised pre-training on the unlabeled pool (Ho et al. 2020; the paper's Sec. 3).

As the published code trains it: epsilon prediction with MSE under a linear beta schedule
(diffusers ``DDPMScheduler``), t drawn from 1..T-1, shuffled epochs of images each shifted
and rotated a little with probability 0.5, AdamW, gradients summed over the accumulated
batches and their values clipped at 1, an EMA of the weights after every optimiser step. An
iteration is an optimiser step. One training run writes every checkpoint in ``sweep`` (the
paper's Figure 2: 4k, 6k, 8k, 10k) and matrix entries that differ only in ``iterations``
share it.

Fast path: data stays on the device, bf16 autocast and TF32 on CUDA (``precision = "fp32"``
for the published code's), no checkpoint writes between the requested ones, optional
``torch.compile``. ``batch_multiplier = k`` trains on k-times larger batches for k-times
fewer steps, so the same number of images is seen; the learning rate is scaled by sqrt(k),
the usual rule for Adam-type optimisers (the gradient noise shrinks by sqrt(k)). Iteration
counts stay in the protocol's units.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from lmbench.api import (
    LmbenchError,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PretrainContext,
    Pretrainer,
    UnitInterval,
    augment_images,
    ema,
    tf32,
    train_steps,
)
from lmbench_plugins.ddpm.backbone import predict_noise


def noised(clean: torch.Tensor, scheduler: DDPMScheduler, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The U-Net's input for ``clean`` noised with ``noise`` at timesteps ``t``.

    ``clean`` is the U-Net's input: the all-zero self-conditioning channel first where the
    U-Net has one (it stays zero), then the image channel.
    """
    return torch.cat([clean[:, :-1], scheduler.add_noise(clean[:, -1:], noise, t)], dim=1)


def noise_prediction_loss(model, clean: torch.Tensor, scheduler: DDPMScheduler, min_timestep: int,
                          generator: torch.Generator | None = None, shard=lambda *tensors: tensors) -> torch.Tensor:
    """MSE of the noise ``model`` predicts for ``clean`` images noised at random timesteps, on
    this process's ``shard`` of the batch and its draws (all of it in a single process)."""
    device = clean.device
    noise = torch.randn(clean[:, -1:].shape, generator=generator, device=device)
    t = torch.randint(min_timestep, scheduler.config.num_train_timesteps, (len(clean),), generator=generator,
                      device=device)
    clean, noise, t = shard(clean, noise, t)
    return F.mse_loss(predict_noise(model, noised(clean, scheduler, noise, t), t).float(), noise)


class ShuffledBatches:
    """Endless batches of indices into ``count`` images: shuffled epochs, each image once per
    epoch; a batch that crosses an epoch's end takes the rest from the next or, with
    ``drop_last``, the epoch's short last batch is dropped. Its state (what is left of the
    epoch) goes into a resumable pre-training's; the generator's is saved beside."""

    def __init__(self, count: int, batch: int, generator: torch.Generator, device, drop_last: bool = False):
        self.count, self.batch, self.generator, self.drop_last = count, batch, generator, drop_last
        self.pending = torch.empty(0, dtype=torch.long, device=device)

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.drop_last and len(self.pending) < self.batch:
            self.pending = self.pending[:0]
        while len(self.pending) < self.batch:
            order = torch.randperm(self.count, generator=self.generator, device=self.pending.device)
            self.pending = torch.cat([self.pending, order])
        batch, self.pending = self.pending[: self.batch], self.pending[self.batch:]
        return batch

    def state_dict(self) -> dict:
        return {"pending": self.pending}

    def load_state_dict(self, state: dict) -> None:
        self.pending = state["pending"].to(self.pending.device)


def epoch_steps(batches_per_epoch: int, accumulation: int):
    """``micro_batches(step)`` of the published loop: ``accumulation`` batches a step, and a
    step forced at each epoch's end on the batches left (ISBI's 150 images in batches of 4:
    37 a epoch, so 4 steps of 8 and one of 5)."""
    if batches_per_epoch < 1:
        raise LmbenchError("ddpm: the pool holds no full batch; lower batch_size or use steps = \"steady\"")
    per_epoch = -(-batches_per_epoch // accumulation)

    def micro_batches(step: int) -> int:
        last = (step - 1) % per_epoch == per_epoch - 1
        return batches_per_epoch - accumulation * (per_epoch - 1) if last else accumulation

    return micro_batches


class DdpmPretrainer(Pretrainer):
    @dataclass
    class Params:
        iterations: PositiveInt = 8000  # the checkpoint the detector starts from
        sweep: list[int] = field(default_factory=list)  # more checkpoints of the same run
        batch_size: PositiveInt = 4
        accumulation: PositiveInt = 8
        accumulate: Literal["sum", "mean"] = "sum"  # the published code sums
        lr: PositiveFloat = 1e-4
        ema_decay: UnitInterval = 0.995
        use_ema: bool = True  # hand the EMA weights to the detector
        # "initial": the average starts from the initial weights, as the published code's copy
        # of the model; "first-step": from the weights after the first step (the CPU profiles',
        # whose few hundred steps would keep 0.995^400 = 13% of the random start)
        ema_start: Literal["initial", "first-step"] = "initial"
        clip: Literal["value", "norm", "none"] = "value"
        clip_at: PositiveFloat = 1.0
        timesteps: PositiveInt = 500
        beta_start: PositiveFloat = 1e-4
        beta_end: PositiveFloat = 0.02
        min_timestep: NonNegativeInt = 1  # the published code draws t from 1..T-1
        augment: bool = True  # shift and rotate each drawn image, as the published code
        augment_probability: UnitInterval = 0.5
        max_shift: UnitInterval = 0.02  # fraction of the image size
        max_rotation: NonNegativeFloat = 2.0  # degrees
        precision: Literal["bf16", "fp32"] = "bf16"  # on CUDA; CPUs always compute in fp32
        batch_multiplier: PositiveInt = 1
        compile: bool = False
        gradient_checkpointing: bool = False  # the published code's memory saving: slower, same numbers
        # "linear": the pool resized as the published code does (OpenCV's INTER_LINEAR, no
        # antialiasing: sharper); "antialiased": the images fine-tuning sees
        resize: Literal["linear", "antialiased"] = "linear"
        # "epochs": the published loop's: shuffled epochs dropping the short last batch, and an
        # optimiser step forced at each epoch's end on the batches left (fewer images); "steady":
        # every step of accumulation batches, batches running across epochs
        steps: Literal["epochs", "steady"] = "epochs"

    # The CPU profiles pre-train without augmentation: with it, their short runs made worse
    # detectors on ISBI 2015 (smoke profile, seed 0: 16.2 against 11.4 mm at 1 label).
    profile_defaults = {
        "smoke": {"iterations": 400, "batch_size": 8, "accumulation": 1, "lr": 1e-3, "augment": False,
                  "resize": "antialiased", "steps": "steady", "ema_start": "first-step"},
        "quick": {"iterations": 800, "batch_size": 8, "accumulation": 1, "lr": 5e-4, "augment": False,
                  "resize": "antialiased", "steps": "steady", "ema_start": "first-step"},
    }
    unkeyed_params = frozenset({"compile", "gradient_checkpointing"})
    checkpoint_param = "iterations"
    produces = "ddpm-unet"
    data_parallel = True

    @property
    def pool_resize(self):
        return self.params.resize

    def checkpoints(self):
        steps, k = super().checkpoints(), self.params.batch_multiplier
        if any(s % k for s in steps):
            raise LmbenchError(f"ddpm: checkpoints {steps} must be multiples of batch_multiplier {k}")
        return steps

    def scheduler(self, device) -> DDPMScheduler:
        p = self.params
        scheduler = DDPMScheduler(
            num_train_timesteps=p.timesteps, beta_start=p.beta_start, beta_end=p.beta_end, beta_schedule="linear"
        )
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
        return scheduler

    def features(self, part, images):
        return None  # a noise-prediction U-Net's health is its held-out denoising loss

    #: where along the schedule the held-out denoising loss is measured
    HELD_OUT_TIMESTEPS = (0.1, 0.3, 0.5, 0.7, 0.9)

    @torch.no_grad()
    def held_out_loss(self, backbone, part, images):
        """The noise-prediction loss on unseen images at fixed timesteps with fixed noise, and
        that of predicting zero (the noise's mean square, about 1)."""
        scheduler, generator = self.scheduler(images.device), torch.Generator(images.device).manual_seed(0)
        clean = backbone.input_adapter()(images)
        losses, zero = [], []
        for fraction in self.HELD_OUT_TIMESTEPS:
            t = torch.full((len(images),), round(fraction * (self.params.timesteps - 1)), device=images.device)
            noise = torch.randn(clean[:, -1:].shape, generator=generator, device=images.device)
            predicted = predict_noise(part, noised(clean, scheduler, noise, t), t).float()
            losses.append(F.mse_loss(predicted, noise).item())
            zero.append(noise.pow(2).mean().item())
        return sum(losses) / len(losses), sum(zero) / len(zero)

    def pretrain(self, context: PretrainContext):
        if len(context.images) == 0:
            raise LmbenchError("ddpm: the pre-training pool is empty")
        fast = self.params.precision == "bf16"  # fp32 keeps PyTorch's defaults, as the published code ran
        with tf32() if fast else contextlib.nullcontext():
            return self._pretrain(context)

    def _pretrain(self, context: PretrainContext):
        p, device = self.params, context.device
        torch.manual_seed(context.seed)
        backbone = context.backbone
        unet = backbone.build_part("ddpm-unet", 1, context.images.shape[-1]).to(device)
        if p.gradient_checkpointing:
            unet.gradient_checkpointing = True  # PublishedUNet's switch
            if hasattr(unet, "enable_gradient_checkpointing"):  # diffusers' UNet2DModel
                unet.enable_gradient_checkpointing()
        prepare = backbone.input_adapter()
        average = ema(unet, p.ema_decay)
        if p.ema_start == "initial":
            average.update_parameters(unet)  # the first update copies: the average holds the initial weights
        model = context.parallel(unet)
        model = torch.compile(model) if p.compile else model
        k = p.batch_multiplier
        scheduler = self.scheduler(device)
        images = context.images.to(device)  # the whole pool stays on the device
        generator = torch.Generator(device=device).manual_seed(context.seed)
        epochs = p.steps == "epochs"
        batches = ShuffledBatches(len(images), p.batch_size * k, generator, device, drop_last=epochs)

        def batch_loss(step, total):
            batch = images[next(batches)]
            if p.augment:
                batch = augment_images(batch, generator, p.augment_probability, p.max_shift, p.max_rotation)
            return noise_prediction_loss(model, prepare(batch), scheduler, p.min_timestep, generator, context.shard)

        unet.train()
        self.losses = train_steps(  # mean noise-prediction loss per optimiser step
            context, torch.optim.AdamW(unet.parameters(), lr=p.lr * math.sqrt(k), fused=True), batch_loss, who="ddpm",
            checkpoints=self.checkpoints(), iterations_per_step=k,
            weights=lambda: (average.module if p.use_ema else unet).state_dict(),
            accumulation=p.accumulation, accumulate=p.accumulate, clip=p.clip, clip_at=p.clip_at,
            precision=p.precision, after_step=lambda step, total: average.update_parameters(unet),
            chance=1.0,  # predicting zero noise: the mean square of unit normal noise
            state={"unet": unet, "ema": average, "generator": generator, "batches": batches},
            micro_batches=epoch_steps(len(images) // (p.batch_size * k), p.accumulation) if epochs else None,
        )
        return None

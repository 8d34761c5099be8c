"""DDPM self-supervised pre-training on the unlabeled pool (Ho et al. 2020; the paper's Sec. 3).

Epsilon prediction with MSE under a linear beta schedule (diffusers ``DDPMScheduler``), AdamW,
gradient accumulation and clipping, an EMA of the weights after every optimiser step. An
iteration is an optimiser step. One training run writes every checkpoint in ``sweep`` (the
paper's Figure 2: 4k, 6k, 8k, 10k) and matrix entries that differ only in ``iterations``
share it.

Fast path: data stays on the device, bf16 autocast and TF32 on CUDA, no checkpoint writes
between the requested ones, optional ``torch.compile``. ``batch_multiplier = k`` trains on
k-times larger batches for k-times fewer steps, so the same number of images is seen; the
learning rate is scaled by sqrt(k), the usual rule for Adam-type optimisers (the gradient
noise shrinks by sqrt(k)). Iteration counts stay in the protocol's units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lmbench.engine import autocast
from lmbench.errors import LmbenchError
from lmbench.interfaces import PretrainContext, Pretrainer
from lmbench_plugins.ddpm.backbone import DdpmUNet


def noise_prediction_loss(model, clean: torch.Tensor, scheduler: DDPMScheduler, min_timestep: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE of the noise ``model`` predicts for ``clean`` images noised at random timesteps.

    ``clean`` is the U-Net's input: the image channel, then an all-zero self-conditioning
    channel where the U-Net has one, which stays zero.
    """
    device = clean.device
    timesteps = scheduler.config.num_train_timesteps
    noise = torch.randn(clean[:, :1].shape, generator=generator, device=device)
    t = torch.randint(min_timestep, timesteps, (len(clean),), generator=generator, device=device)
    noisy = torch.cat([scheduler.add_noise(clean[:, :1], noise, t), clean[:, 1:]], dim=1)
    with autocast(device):
        predicted = model(noisy, t).sample
    return F.mse_loss(predicted.float(), noise)


class DdpmPretrainer(Pretrainer):
    @dataclass
    class Params:
        iterations: int = 8000  # the checkpoint the detector starts from
        sweep: list[int] = field(default_factory=list)  # more checkpoints of the same run
        batch_size: int = 4
        accumulation: int = 8
        accumulate: Literal["mean", "sum"] = "mean"  # the published code sums
        lr: float = 1e-4
        ema_decay: float = 0.995
        use_ema: bool = True  # hand the EMA weights to the detector
        clip: Literal["value", "norm", "none"] = "value"
        clip_at: float = 1.0
        timesteps: int = 500
        beta_start: float = 1e-4
        beta_end: float = 0.02
        min_timestep: int = 0  # the published code draws t from 1..T-1
        batch_multiplier: int = 1
        compile: bool = False

    profile_defaults = {
        "smoke": {"iterations": 400, "batch_size": 8, "accumulation": 1, "lr": 1e-3},
        "quick": {"iterations": 800, "batch_size": 8, "accumulation": 1, "lr": 5e-4},
    }
    unkeyed_params = frozenset({"compile"})
    checkpoint_param = "iterations"

    def checkpoints(self):
        p = self.params
        steps = self.sweep_steps("ddpm", p.iterations, p.sweep)
        if any(s % p.batch_multiplier for s in steps):
            raise LmbenchError(f"ddpm: checkpoints {steps} must be multiples of batch_multiplier {p.batch_multiplier}")
        return steps

    def incompatibility(self, backbone):
        return None if isinstance(backbone, DdpmUNet) else "ddpm pre-trains the ddpm-unet backbone only"

    def pretrain(self, context: PretrainContext):
        p, device = self.params, context.device
        if len(context.images) == 0:
            raise LmbenchError("ddpm: the pre-training pool is empty")
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(context.seed)
        backbone: DdpmUNet = context.backbone
        size = context.images.shape[-1]
        unet = backbone.build_unet(size).to(device)
        prepare = backbone.input_adapter()
        ema = AveragedModel(unet, multi_avg_fn=get_ema_multi_avg_fn(p.ema_decay), use_buffers=True)
        model = torch.compile(unet) if p.compile else unet
        k = p.batch_multiplier
        optimiser = torch.optim.AdamW(unet.parameters(), lr=p.lr * math.sqrt(k))
        scheduler = DDPMScheduler(
            num_train_timesteps=p.timesteps, beta_start=p.beta_start, beta_end=p.beta_end, beta_schedule="linear"
        )
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
        images = prepare(context.images.to(device))  # the whole pool stays on the device
        generator = torch.Generator(device=device).manual_seed(context.seed)
        checkpoints = self.checkpoints()
        total = checkpoints[-1] // k
        batch = p.batch_size * k

        unet.train()
        self.losses = []  # mean noise-prediction loss per optimiser step
        for step in range(1, total + 1):
            step_loss = 0.0
            for _ in range(p.accumulation):
                index = torch.randint(len(images), (batch,), generator=generator, device=device)
                loss = noise_prediction_loss(model, images[index], scheduler, p.min_timestep, generator)
                if not torch.isfinite(loss):
                    raise LmbenchError(f"ddpm: loss became {loss.item()} at iteration {step * k}")
                (loss / p.accumulation if p.accumulate == "mean" else loss).backward()
                step_loss += loss.item() / p.accumulation
            self.losses.append(step_loss)
            if p.clip == "value":
                torch.nn.utils.clip_grad_value_(unet.parameters(), p.clip_at)
            elif p.clip == "norm":
                torch.nn.utils.clip_grad_norm_(unet.parameters(), p.clip_at)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            ema.update_parameters(unet)
            if step * k in checkpoints:
                source = ema.module if p.use_ema else unet
                context.save_checkpoint(step * k, {f"unet.{n}": v for n, v in source.state_dict().items()})
            context.progress(step, total)
        return None

"""Profiles: named defaults for input size and fine-tuning, overridable in any matrix.

``paper`` follows the published protocol (../REFERENCE.md of the project docs); ``quick``
and ``smoke`` shrink it for CPUs. Plugins add their own per-profile defaults (model widths,
pre-training steps) through ``Component.profile_defaults``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from annotated_types import Interval

from lmbench.core.params import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval


@dataclass
class FinetuneConfig:
    """The shared fine-tuning engine's settings. Defaults are the paper's."""

    epochs: Annotated[int, Interval(ge=1, le=100_000)] = 200  # an epoch is at least one step
    batch_size: PositiveInt = 2
    accumulation: PositiveInt = 8  # batches whose gradients are averaged into one optimiser step
    lr: PositiveFloat = 1e-5  # AdamW learning rate when pre-trained weights were loaded
    lr_scratch: PositiveFloat = 1e-4  # ... and when the network starts from random weights
    weight_decay: NonNegativeFloat = 1e-2
    plateau_factor: Annotated[float, Interval(gt=0, lt=1)] = 0.5  # ReduceLROnPlateau on validation loss
    plateau_patience: NonNegativeInt = 13
    early_stopping: PositiveInt = 27  # epochs without a better validation loss before stopping
    # an epoch is better only when its validation loss is below the best by more than this
    # share of it: a converged run stops, its best epoch where it last really improved (no
    # profile's: with shorter patience it ended smoke runs before their best, docs/benchmarks.md)
    min_delta: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    # a validation pass every N epochs and after the last (GU2Net's published code: 2); the
    # plateau schedule and early stopping act on validated epochs only
    validate_every: PositiveInt = 1
    # Images drawn per epoch; 0 = the labelled set once, as the paper. With one label an
    # epoch is one step, so the CPU profiles repeat the (augmented) set to fill an epoch.
    samples_per_epoch: NonNegativeInt = 0
    augment: bool = True
    augment_probability: UnitInterval = 0.5
    max_shift: UnitInterval = 0.02  # fraction of the image size
    max_scale: Annotated[float, Interval(ge=0, lt=1)] = 0.02
    max_rotation: Annotated[float, Interval(ge=0, le=180)] = 2.0  # degrees
    renormalize_warped: bool = True  # each warped image min-max normalised again, as the published pipeline does
    precision: Literal["bf16", "fp32"] = "bf16"  # autocast on CUDA; the published code runs fp32
    validation_average: Literal["image", "batch"] = "image"  # the published code averages batch losses
    # images per forward pass when nothing trains (prediction; validation where its value cannot
    # depend on the batching: per-image averaging of a mean loss): up to 2x faster on CPUs
    eval_batch_size: PositiveInt = 16
    # a network trained on several datasets: its validation loss weighs each dataset by its
    # images, or each dataset alike (GU2Net's published code: the sum of their means)
    joint_validation: Literal["images", "datasets"] = "images"
    # ... and takes its datasets' batches in turn, or every batch of every dataset in one
    # shuffled order (GU2Net's published MixIter with mix_step 1)
    joint_order: Literal["turns", "shuffled"] = "turns"
    # A backbone may bring its own recipe (``Component.finetune_defaults``): GU2Net's is Adam,
    # a cyclic learning rate stepped every batch, and the loss summed over pixels
    optimizer: Literal["adamw", "adam"] = "adamw"  # Adam's weight decay is an L2 term in the gradient
    # "cosine": a linear warm-up over ``warmup_epochs``, then a cosine decay to zero at ``epochs``,
    # stepped every optimiser step (no profile's: it made the smoke detectors worse, docs/benchmarks.md)
    schedule: Literal["plateau", "cyclic", "cosine"] = "plateau"
    warmup_epochs: NonNegativeInt = 0
    cyclic_max_lr: PositiveFloat = 1e-2  # CyclicLR from lr to this, triangular2, ...
    cyclic_half_period: PositiveInt = 2000  # ... optimiser steps up, as many down
    loss_reduction: Literal["mean", "sum"] = "mean"  # "sum": the head's mean times its target's size


@dataclass(frozen=True)
class Profile:
    name: str
    image_size: int
    finetune: dict


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        image_size=64,
        finetune=dict(
            epochs=40, batch_size=4, accumulation=1, lr=1e-3, lr_scratch=1e-3,
            plateau_patience=5, early_stopping=10, samples_per_epoch=32, renormalize_warped=False,
        ),
    ),
    "quick": Profile(
        "quick",
        image_size=128,
        finetune=dict(
            epochs=40, batch_size=4, accumulation=2, lr=3e-4, lr_scratch=1e-3,
            plateau_patience=5, early_stopping=10, samples_per_epoch=64, renormalize_warped=False,
        ),
    ),
    "paper": Profile("paper", image_size=256, finetune={}),
}

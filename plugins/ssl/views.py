"""Augmented views of x-rays for self-supervised learning, from lightly's view transforms.

The published recipe's views are ImageNet's (``published_view_args``): crops, flips, colour
jitter, grayscale conversion, blur and solarisation on the gray image repeated to RGB,
normalised with mean 0.5 and ImageNet's std. The xray recipe's are milder, for these reasons.
Radiographs are single-channel, and their anatomy has a handedness, so lightly's defaults
are narrowed on purpose: no horizontal or vertical flips, no hue or saturation jitter and no
grayscale conversion (there is no colour), no solarisation (it inverts bright bone into dark,
which no exposure does). What stays: random resized crops, brightness and contrast jitter
(exposure varies between machines) and Gaussian blur (so does sharpness). Crops keep at
least 40% of the image and the jitter is half lightly's SimCLR strength by default: with
ImageNet's strengths, on a pool of a few dozen radiographs that all show the same anatomy,
the contrastive losses stay at chance for hundreds of steps. Views stay one
channel in [0, 1], the same input range as fine-tuning, so no ImageNet normalisation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

#: the published code's normalisation: mean 0.5, ImageNet's standard deviations
PUBLISHED_NORMALIZE = {"mean": [0.5, 0.5, 0.5], "std": [0.229, 0.224, 0.225]}


def published_view_args() -> dict:
    """What every published view shares, as keyword arguments of lightly's view transforms:
    flips with probability 0.5, colour jitter with 0.8 and grayscale conversion with 0.2, blur
    of sigma 0.1 to 2 px with 0.5, no rotation."""
    return dict(hf_prob=0.5, vf_prob=0.0, rr_prob=0.0, cj_prob=0.8, random_gray_scale=0.2, sigmas=(0.1, 2.0),
                normalize=PUBLISHED_NORMALIZE)


def xray_view_args(size: int, jitter: float) -> dict:
    """The x-ray restrictions, as keyword arguments of lightly's view transforms. ``jitter``
    scales lightly's brightness and contrast ranges (0.8 each); blur widths are lightly's
    (made for 224 px images) scaled to ``size``."""
    scale = size / 224
    return dict(hf_prob=0.0, vf_prob=0.0, rr_prob=0.0, cj_strength=jitter, cj_sat=0.0, cj_hue=0.0,
                random_gray_scale=0.0, sigmas=(0.1 * scale, 2.0 * scale), normalize=None)


class ViewsDataset(torch.utils.data.Dataset):
    """Pool images as 8-bit grayscale PIL images (repeated to RGB for 3 channels), each
    returned as a list of views."""

    def __init__(self, images: torch.Tensor, transform: Callable[[Image.Image], list[torch.Tensor]], channels: int = 1):
        pixels = (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        self.images = [Image.fromarray(p, mode="L").convert("RGB" if channels == 3 else "L") for p in pixels]
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(self.images[index])


def seed_worker(worker_id: int) -> None:
    # lightly's blur draws from numpy's global generator: seed it from torch's per-worker seed
    np.random.seed(torch.initial_seed() % 2**32)


def view_batches(images: torch.Tensor, transform, batch_size: int, count: int, seed: int, workers: int,
                 channels: int = 1):
    """``count`` batches of views (a list of (B, 1, h, w) tensors each), drawn with replacement."""
    generator = torch.Generator().manual_seed(seed)
    np.random.seed(seed)
    sampler = torch.utils.data.RandomSampler(
        range(len(images)), replacement=True, num_samples=count * batch_size, generator=generator
    )
    return torch.utils.data.DataLoader(
        ViewsDataset(images, transform, channels), batch_size=batch_size, sampler=sampler, num_workers=workers,
        worker_init_fn=seed_worker, generator=generator, drop_last=True,
    )

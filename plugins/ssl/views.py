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

import random
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from lmbench.api import LmbenchError

#: the published code's normalisation: mean 0.5, ImageNet's standard deviations
PUBLISHED_NORMALIZE = {"mean": [0.5, 0.5, 0.5], "std": [0.229, 0.224, 0.225]}


def published_view_args() -> dict:
    """What every published view shares, as keyword arguments of lightly's view transforms:
    flips with probability 0.5, colour jitter with 0.8 and grayscale conversion with 0.2, blur
    of sigma 0.1 to 2 px with 0.5, no rotation."""
    return dict(hf_prob=0.5, vf_prob=0.0, rr_prob=0.0, cj_prob=0.8, random_gray_scale=0.2, sigmas=(0.1, 2.0),
                normalize=PUBLISHED_NORMALIZE)


class BatchViews:
    """The published code's views: torchvision transforms applied to the whole batch tensor,
    so every image of a micro-batch gets the same crop, flip, jitter and blur. ``views`` are
    callables on a (B, C, S, S) batch, one per view."""

    def __init__(self, views: list[Callable[[torch.Tensor], torch.Tensor]]):
        self.views = views


def published_batch_view(crop: int, scale: tuple[float, float], *, blur_size: int, bicubic: bool = True,
                         jitter: tuple[float, ...] = (0.4, 0.4, 0.2, 0.1), solarize: bool = False) -> v2.Compose:
    """One view of the published builders, as torchvision v2 transforms: a random resized crop
    to ``crop`` px, a flip (0.5), colour jitter (0.8), grayscale (0.2), a blur of kernel
    ``blur_size // 20 * 2 + 1`` (0.5), optionally solarisation (0.2), the published normalisation."""
    interpolation = InterpolationMode.BICUBIC if bicubic else InterpolationMode.BILINEAR
    return v2.Compose([
        v2.RandomResizedCrop(crop, scale=scale, interpolation=interpolation),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomApply([v2.ColorJitter(*jitter)], p=0.8),
        v2.RandomGrayscale(0.2),
        v2.RandomApply([v2.GaussianBlur(blur_size // 20 * 2 + 1, sigma=(0.1, 2.0))], p=0.5),
        *([v2.RandomSolarize(0.5, p=0.2)] if solarize else []),
        v2.Normalize(**PUBLISHED_NORMALIZE),
    ])


def xray_view_args(size: int, jitter: float) -> dict:
    """The x-ray restrictions, as keyword arguments of lightly's view transforms. ``jitter``
    scales lightly's brightness and contrast ranges (0.8 each); blur widths are lightly's
    (made for 224 px images) scaled to ``size``."""
    scale = size / 224
    return dict(hf_prob=0.0, vf_prob=0.0, rr_prob=0.0, cj_strength=jitter, cj_sat=0.0, cj_hue=0.0,
                random_gray_scale=0.0, sigmas=(0.1 * scale, 2.0 * scale), normalize=None)


class ViewBatches(torch.utils.data.Dataset):
    """Batch ``b`` of views: ``batch_size`` pool images drawn with replacement or, with
    ``epochs``, the b-th batch of shuffled passes over the pool whose short last batch is
    dropped (the published loaders' ``shuffle`` and ``drop_last``); each image a list of views,
    stacked per view. A function of (seed, b) alone: the same batches with any number of
    workers, and a resumed pre-training draws the ones it would have drawn."""

    def __init__(self, images: torch.Tensor, transform: Callable[[Image.Image], list[torch.Tensor]], batch_size: int,
                 seed: int, channels: int = 1, epochs: bool = False):
        pixels = (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8)
        if isinstance(transform, BatchViews):  # float tensors in [0, 1], as torchvision's ToTensor gives
            self.images = (pixels.float() / 255)[:, None].expand(-1, channels, -1, -1)
        else:
            mode = "RGB" if channels == 3 else "L"
            self.images = [Image.fromarray(p, mode="L").convert(mode) for p in pixels.numpy()]
        self.transform, self.batch_size, self.seed, self.epochs = transform, batch_size, seed, epochs
        if epochs and len(self.images) < batch_size:
            raise LmbenchError(f"a pool of {len(self.images)} images holds no full batch of {batch_size}")

    def indices(self, b: int, draw: int) -> torch.Tensor:
        n = len(self.images)
        if not self.epochs:
            return torch.randint(n, (self.batch_size,), generator=torch.Generator().manual_seed(draw))
        per_epoch = n // self.batch_size
        epoch, position = divmod(b, per_epoch)
        (order_seed,) = np.random.SeedSequence([self.seed, epoch, 1]).generate_state(1)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(order_seed)))
        return order[position * self.batch_size:(position + 1) * self.batch_size]

    def __getitem__(self, b: int) -> list[torch.Tensor]:
        draw, torch_seed, numpy_seed, python_seed = np.random.SeedSequence([self.seed, b]).generate_state(4)
        index = self.indices(b, int(draw))
        # the transforms draw from torch's, numpy's (lightly's blur) and Python's global generators
        numpy_state, python_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch_seed))
            np.random.seed(int(numpy_seed))
            random.seed(int(python_seed))
            if isinstance(self.transform, BatchViews):
                batch = self.images[index]
                stacked = [view(batch) for view in self.transform.views]
            else:
                views = [self.transform(self.images[i]) for i in index.tolist()]
                stacked = [torch.stack(view) for view in zip(*views)]
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        return stacked


class ViewStream:
    """Batches ``next`` to ``count`` of ``ViewBatches``, loaded by ``workers`` processes; its
    state is the next batch's number."""

    def __init__(self, batches: ViewBatches, count: int, workers: int):
        self.batches, self.count, self.workers = batches, count, workers
        self.next, self._loader = 0, None

    def __iter__(self):
        return self

    def __next__(self) -> list[torch.Tensor]:
        if self._loader is None:
            self._loader = iter(torch.utils.data.DataLoader(
                self.batches, batch_size=None, sampler=range(self.next, self.count), num_workers=self.workers,
                generator=torch.Generator()))  # its worker seeds, unused, leave the global generator alone
        batch = next(self._loader)
        self.next += 1
        return batch

    def state_dict(self) -> dict:
        return {"next": self.next}

    def load_state_dict(self, state: dict) -> None:
        self.next, self._loader = state["next"], None


def view_batches(images: torch.Tensor, transform, batch_size: int, count: int, seed: int, workers: int,
                 channels: int = 1, epochs: bool = False) -> ViewStream:
    """``count`` batches of views (a list of (B, C, h, w) tensors each), drawn with replacement
    or in shuffled passes (``epochs``)."""
    return ViewStream(ViewBatches(images, transform, batch_size, seed, channels, epochs), count, workers)

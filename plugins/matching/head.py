"""One-shot detection by dense feature matching: no fine-tuning, the pre-trained network as it is.

Fit: each landmark's feature vector in every labelled image, read from the backbone's feature
maps at the landmark (bilinear, every level), L2-normalised and averaged over the images.
Locate, coarse to fine:

1. the whole image at the input size S: cosine similarity of each landmark's vectors with
   every position of each feature map, upsampled to S x S and averaged over the levels; the
   best position is the coarse point;
2. for each ``zooms`` factor z after the first: the image resized to z*S (antialiased), an
   S x S window around the current point, matched against vectors fitted the same way on
   windows around the labelled landmarks; the best position moves the point. With z*S at or
   beyond the image's own size the last step looks at the original resolution, so the error
   is not bounded by the input grid (one input pixel at 128 px is about 1.5 mm on ISBI 2015).

Every best position is refined below the pixel by a parabola through its neighbours. The
coarse similarity, as a softmax at ``temperature``, is the map whose spread sizes each
landmark's uncertainty region. CC2D (Yao et al., MICCAI 2021) matches this way after its own
self-supervised pre-training; here any pretrainer's features can be matched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lmbench.api import (
    MatchingHead,
    NonNegativeFloat,
    NonNegativeInt,
    PluginError,
    PositiveFloat,
    resize_image,
    to_input,
    to_original,
)


def _windows(image: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """(1, 1, H, W) image, (K, 2) window centres in its pixels -> (K, 1, size, size) windows,
    the border replicated outside the image."""
    height, width = image.shape[-2:]
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    xs = centres[:, 0, None] + offsets  # (K, size)
    ys = centres[:, 1, None] + offsets
    grid = torch.stack(torch.broadcast_tensors(((2 * xs + 1) / width - 1)[:, None, :],
                                               ((2 * ys + 1) / height - 1)[:, :, None]), dim=-1)
    return F.grid_sample(image.expand(len(centres), -1, -1, -1), grid, mode="bilinear",
                         padding_mode="border", align_corners=False)


def _sample(features: list[torch.Tensor], points: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Each level's L2-normalised vectors at (B, N, 2) input-pixel points -> [(B, N, C_l)]."""
    grid = ((2 * points + 1) / size - 1)[:, :, None, :]  # (B, N, 1, 2)
    out = []
    for level in features:
        vectors = F.grid_sample(level.float(), grid.to(level.device), mode="bilinear", align_corners=False)
        out.append(F.normalize(vectors[..., 0].transpose(1, 2), dim=-1).cpu())
    return out


def _similarity(features: list[torch.Tensor], templates: list[torch.Tensor], size: int,
                pairs: str = "nc,bchw->bnhw") -> torch.Tensor:
    """Cosine similarity of (N, C_l) templates with every position of each level, upsampled to
    size x size and averaged over the levels: (B, N, S, S) for every template in every image, or
    with ``pairs = "bc,bchw->bhw"`` (N, S, S) for template j in image j."""
    total = None
    for level, template in zip(features, templates):
        maps = torch.einsum(pairs, template.to(level.device), F.normalize(level.float(), dim=1))
        maps = maps if maps.ndim == 4 else maps[:, None]
        maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False).cpu()
        total = maps if total is None else total + maps
    return total / len(templates)


def _peaks(maps: torch.Tensor) -> torch.Tensor:
    """(..., S, S) maps -> (..., 2) (x, y) of each maximum, refined below the pixel by a
    parabola through its neighbours along each axis."""
    size = maps.shape[-1]
    flat = maps.flatten(-2).argmax(-1)
    y, x = flat // size, flat % size
    m = maps.reshape(-1, size, size)
    x, y = x.reshape(-1), y.reshape(-1)
    idx = torch.arange(len(m))

    def offset(left, centre, right):
        curvature = left - 2 * centre + right
        step = torch.where(curvature < 0, 0.5 * (left - right) / curvature.clamp(max=-1e-12), torch.zeros_like(centre))
        return step.clamp(-0.5, 0.5)

    inside_x = (x > 0) & (x < size - 1)
    inside_y = (y > 0) & (y < size - 1)
    xl, xr = (x - 1).clamp(min=0), (x + 1).clamp(max=size - 1)
    yl, yr = (y - 1).clamp(min=0), (y + 1).clamp(max=size - 1)
    centre = m[idx, y, x]
    dx = torch.where(inside_x, offset(m[idx, y, xl], centre, m[idx, y, xr]), torch.zeros_like(centre))
    dy = torch.where(inside_y, offset(m[idx, yl, x], centre, m[idx, yr, x]), torch.zeros_like(centre))
    points = torch.stack([x.float() + dx, y.float() + dy], dim=-1)
    return points.reshape(*maps.shape[:-2], 2)


def _distance_squared(size: int) -> torch.Tensor:
    """(S, S) squared distance from the window's centre, 1 at half the window's side."""
    offsets = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) / (size / 2)
    return offsets[None, :] ** 2 + offsets[:, None] ** 2


class FeatureMatch(MatchingHead):
    """Matches each landmark's averaged feature vectors, coarse to fine (module docstring)."""

    @dataclass
    class Params:
        #: window magnification of each step: 1 is the whole image; each next one looks at an
        #: S x S window of the image resized to z*S
        zooms: list[PositiveFloat] = field(default_factory=lambda: [1.0, 2.0, 4.0])
        #: which of the backbone's feature maps each step matches (indices, coarsest first; the
        #: last list serves the steps after it; indices past the backbone's maps are left out;
        #: empty: all of them): the coarse, semantic maps find the landmark, the finer ones place it
        levels: list[list[NonNegativeInt]] = field(default_factory=lambda: [[0, 1, 2], [0, 1, 2], [1, 2, 3]])
        #: the similarity a window's match loses at its edge (quadratic in the distance from the
        #: window's centre, the point the step before found)
        prior: NonNegativeFloat = 0.1
        #: of the softmax over the coarse similarity that sizes each landmark's uncertainty region
        temperature: PositiveFloat = 0.05

        def __post_init__(self):
            if not self.zooms or self.zooms[0] != 1:
                raise PluginError(f"feature-match: zooms must start at 1 (the whole image), got {self.zooms}")

    def _levels(self, features: list[torch.Tensor], step: int) -> list[torch.Tensor]:
        chosen = self.params.levels[min(step, len(self.params.levels) - 1)] if self.params.levels else []
        # indices past a shallower backbone's maps are left out, so that one setting serves every backbone
        return [features[i] for i in chosen if i < len(features)] or features

    def _steps(self, image: np.ndarray, size: int) -> list[torch.Tensor]:
        """The image at z*S (as the runs' inputs: aspect ignored, min-max normalised) for each zoom."""
        return [resize_image(image, round(size * zoom))[None] for zoom in self.params.zooms]

    def fit(self, encode, images, landmarks, size):
        sums: dict[str, torch.Tensor] = {}
        for image, points in zip(images, landmarks):
            shape = image.shape[:2]
            for step, view in enumerate(self._steps(image, size)):
                scaled = torch.from_numpy(to_input(points, shape, view.shape[-1])).float()
                if step == 0:
                    inputs, at = view, scaled[None]
                else:  # a window centred on each landmark, read at its centre
                    inputs = _windows(view, scaled, size)
                    at = torch.full((len(scaled), 1, 2), (size - 1) / 2)
                vectors = _sample(self._levels(encode(inputs), step), at, size)
                for level, v in enumerate(vectors):
                    v = v[0] if step == 0 else v[:, 0]  # (N, C)
                    name = f"template_{step}_{level}"
                    sums[name] = sums.get(name, 0) + v
        for name, total in sums.items():
            setattr(self, name, F.normalize(total, dim=-1))

    def _templates(self, step: int) -> list[torch.Tensor]:
        found = []
        while hasattr(self, f"template_{step}_{len(found)}"):
            found.append(getattr(self, f"template_{step}_{len(found)}"))
        if not found:
            raise PluginError("feature-match: locate before fit (no templates)")
        return found

    def locate(self, encode, images, size):
        points, maps = [], []
        for image in images:
            shape = image.shape[:2]
            steps = self._steps(image, size)
            coarse = _similarity(self._levels(encode(steps[0]), 0), self._templates(0), size)[0]  # (N, S, S)
            maps.append((coarse / self.params.temperature).flatten(1).softmax(-1).view_as(coarse))
            found = to_original(_peaks(coarse).numpy(), shape, size)
            for step, view in enumerate(steps[1:], start=1):
                centres = torch.from_numpy(to_input(found, shape, view.shape[-1])).float()
                windows = _windows(view, centres, size)  # landmark j's window is image j of the batch
                own = _similarity(self._levels(encode(windows), step), self._templates(step), size, "bc,bchw->bhw")[:, 0]
                own = own - self.params.prior * _distance_squared(size)  # the point moves only where it must
                moved = centres + _peaks(own) - (size - 1) / 2
                found = to_original(moved.numpy(), shape, view.shape[-1])
            points.append(found)
        return np.stack(points), torch.stack(maps)


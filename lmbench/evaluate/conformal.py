"""How far each predicted landmark can be trusted: split conformal regions, per landmark.

Calibrated on the validation split, which fine-tuning only used to pick its epoch, and
tested on the test split. Two kinds of region around each predicted point:

- ``fixed``: a disk of one radius per landmark, the conformal quantile of the validation
  errors;
- ``adaptive``: a disk whose radius is the landmark's heatmap spread times one factor per
  landmark, the conformal quantile of the validation errors divided by their spreads, so
  that a diffuse heatmap gets a wide region and a sharp one a narrow region.

The quantile is the ceil((n + 1) level)-th smallest of n scores: with exchangeable images,
a test point falls inside its region with probability at least ``level``; with too few
validation images for that rank, the region is unbounded (an infinite radius).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lmbench.data.geometry import unit_scale

MIN_SPREAD = 1e-6  # a heatmap concentrated on one pixel still scales its region


def conformal_quantile(scores: np.ndarray, level: float) -> np.ndarray:
    """(M, N) scores -> (N,) per-landmark quantiles with the finite-sample correction."""
    scores = np.sort(np.asarray(scores, float), axis=0)
    rank = math.ceil((len(scores) + 1) * level)
    if rank > len(scores):
        return np.full(scores.shape[1], np.inf)
    return scores[rank - 1]


def covariance(probabilities: torch.Tensor) -> torch.Tensor:
    """(B, N, H, W) maps, each summing to 1 -> (B, N, 2, 2) spatial covariance in (x, y) pixels."""
    height, width = probabilities.shape[-2:]
    p = probabilities.double()
    xs = torch.arange(width, dtype=p.dtype).view(1, 1, 1, -1)
    ys = torch.arange(height, dtype=p.dtype).view(1, 1, -1, 1)
    mx, my = (p * xs).sum((-2, -1)), (p * ys).sum((-2, -1))
    dx, dy = xs - mx[..., None, None], ys - my[..., None, None]
    cxx, cyy, cxy = (p * dx * dx).sum((-2, -1)), (p * dy * dy).sum((-2, -1)), (p * dx * dy).sum((-2, -1))
    return torch.stack([torch.stack([cxx, cxy], -1), torch.stack([cxy, cyy], -1)], -2).float()


def spread(cov: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(..., 2, 2) input-pixel covariances and (..., 2) per-axis scales to the measuring unit
    (x and y) -> the root-mean-square spread per axis, in that unit."""
    cov = np.asarray(cov, float)
    variance = cov[..., 0, 0] * scale[..., 0] ** 2 + cov[..., 1, 1] * scale[..., 1] ** 2
    return np.sqrt(np.maximum(variance / 2, 0.0))


def spreads_of(covariances: np.ndarray, shapes: list[tuple[int, int]], size: int,
               spacings: list[float | None] | None = None) -> np.ndarray:
    """(M, N) spreads of (M, N, 2, 2) input-pixel covariances, in each original image's pixels,
    or in mm through its ``spacings``."""
    spacings = spacings if spacings is not None else [None] * len(shapes)
    scales = np.stack([unit_scale(shape, size, spacing) for shape, spacing in zip(shapes, spacings)])
    return spread(covariances, scales[:, None, :])


def adaptive_radii(scale: np.ndarray, spreads: np.ndarray) -> np.ndarray:
    """(M, N) radii of adaptive regions: each landmark's ``scale`` times each point's spread."""
    return np.asarray(scale) * np.maximum(spreads, MIN_SPREAD)


def calibrate(errors: np.ndarray, spreads: np.ndarray, level: float) -> dict[str, np.ndarray]:
    """Validation (M, N) errors and spreads -> per-landmark ``radius`` (fixed regions, in the
    errors' unit) and ``scale`` (adaptive regions: radius = scale * spread)."""
    return {
        "radius": conformal_quantile(errors, level),
        "scale": conformal_quantile(np.asarray(errors) / np.maximum(spreads, MIN_SPREAD), level),
    }


def radii(regions: dict[str, np.ndarray], spreads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, N) radii of the fixed and the adaptive regions around points of these spreads."""
    return np.broadcast_to(regions["radius"], spreads.shape), adaptive_radii(regions["scale"], spreads)


def reliability(val_errors, val_spreads, test_errors, test_spreads, levels) -> dict[str, list[float]]:
    """Observed test coverage (share of points inside their region) of fixed and adaptive
    regions calibrated at each nominal level."""
    out = {"fixed": [], "adaptive": []}
    for level in levels:
        fixed, adaptive = radii(calibrate(val_errors, val_spreads, level), test_spreads)
        out["fixed"].append(float((test_errors <= fixed).mean()))
        out["adaptive"].append(float((test_errors <= adaptive).mean()))
    return out

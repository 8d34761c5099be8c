"""The ``paper`` evaluation mode: the published metric code's rules, so that numbers can be put
next to the paper's tables (``native`` evaluation is the one to trust).

That code measures everything at 256 x 256: the ground truth is drawn as a disk (a Gaussian of
sigma 5 px thresholded at half its maximum, around the rounded point), re-extracted as the
disk's centroid and rounded; predictions are rounded too. Distances become the dataset's
unit through ``Dataset.paper_axis_scale``: each axis has its own factor there, because the
ceph code scales the two axes the wrong way round.
"""

from __future__ import annotations

import math

import numpy as np

from lmbench.core.interfaces import Dataset
from lmbench.data.geometry import to_input

PAPER_SIZE = 256
DISK_SIGMA = 5.0
DISK_RADIUS_SQUARED = 2 * DISK_SIGMA**2 * math.log(2)  # where the Gaussian is at least half its peak


def reextracted_truth(points: np.ndarray, size: int = PAPER_SIZE) -> np.ndarray:
    """(..., 2) points at ``size`` px -> the rounded centroids of their disks, clipped to the image
    (a disk cut by the border moves inward)."""
    centres = np.round(points)
    grid = np.arange(size, dtype=float)
    dx = (grid - centres[..., :1]) ** 2  # (..., size) along x
    dy = (grid - centres[..., 1:]) ** 2
    inside = dy[..., :, None] + dx[..., None, :] <= DISK_RADIUS_SQUARED  # (..., size_y, size_x)
    count = inside.sum(axis=(-2, -1))
    x = (inside.sum(axis=-2) * grid).sum(axis=-1) / np.maximum(count, 1)
    y = (inside.sum(axis=-1) * grid).sum(axis=-1) / np.maximum(count, 1)
    centroid = np.round(np.stack([x, y], axis=-1))
    return np.where(count[..., None] > 0, centroid, np.clip(centres, 0, size - 1))


def paper_errors(dataset: Dataset, predicted_input: np.ndarray, truth_original: np.ndarray,
                 shapes: list[tuple[int, int]], spacings: list[float | None], input_size: int) -> np.ndarray:
    """(M, N) errors as the published code computes them, from predictions in input pixels."""
    predicted = np.round((np.asarray(predicted_input, float) + 0.5) * PAPER_SIZE / input_size - 0.5)
    errors = np.empty(predicted.shape[:2])
    for i, (shape, spacing) in enumerate(zip(shapes, spacings)):
        truth = reextracted_truth(to_input(truth_original[i], shape, PAPER_SIZE))
        sx, sy = dataset.paper_axis_scale(truth, shape, spacing)
        d = predicted[i] - truth
        errors[i] = np.hypot(d[:, 0] * sx, d[:, 1] * sy)
    return errors

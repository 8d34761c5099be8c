"""Between the original image and the network's square input, and back.

Coordinates are (x, y) with pixel centres at integers, so resizing an image of width W to S
maps x to (x + 0.5) * S / W - 0.5, the same convention as ``align_corners=False``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from lmbench.deploy import to_original  # noqa: F401  numpy only, shared with an exported detector's runtime


def to_input(points: np.ndarray, shape: tuple[int, int], size: int) -> np.ndarray:
    """Original-image points (..., 2) of an image of ``shape`` (H, W) -> input pixels."""
    scale = np.array([size / shape[1], size / shape[0]])
    return (points + 0.5) * scale - 0.5


def unit_scale(shape: tuple[int, int], size: int, spacing: float | None = None) -> np.ndarray:
    """(x, y) lengths of one input pixel in the original image of ``shape`` (H, W): in its
    pixels, or in mm when its pixel ``spacing`` is given."""
    return np.array([shape[1] / size, shape[0] / size]) * (1.0 if spacing is None else spacing)


def resize_image(image: np.ndarray, size: int, resize: str = "antialiased") -> torch.Tensor:
    """(H, W) image -> (1, size, size) float32, aspect ignored as in the paper, min-max to [0, 1].
    ``resize``: "antialiased" bilinear, or "linear", OpenCV's INTER_LINEAR without antialiasing
    (the published DDPM pre-training's)."""
    pixels = np.ascontiguousarray(image, dtype=np.float32)
    if resize == "linear":
        x = torch.from_numpy(cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR))[None]
    else:
        x = F.interpolate(torch.from_numpy(pixels)[None, None], size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)[0]
    low, high = x.min(), x.max()
    return (x - low) / (high - low) if high > low else torch.zeros_like(x)

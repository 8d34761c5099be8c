"""A matching head (``MatchingHead``) at work: fitted on the labelled images, then locating
landmarks in new ones, through the backbone's dense feature maps. Shared by the runs and by
saved detectors, so that ``lmbench predict`` finds the points a run scored."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from lmbench.core.errors import PluginError
from lmbench.core.interfaces import Backbone, MatchingHead
from lmbench.evaluate import conformal


def encoder(backbone: Backbone, model: torch.nn.Module, device: torch.device) -> Callable:
    """``encode(images)``: the backbone's feature maps of (B, 1, S, S) images, without gradients."""
    model.eval().to(device)

    def encode(images: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            maps = backbone.features(model, images.to(device))
        if not maps:
            raise PluginError(f"backbone {backbone.name!r} gave no feature maps to match")
        return [m.float() for m in maps]

    return encode


def fit(head: MatchingHead, backbone: Backbone, model: torch.nn.Module, images: list[np.ndarray],
        landmarks: list[np.ndarray], size: int, device: torch.device) -> None:
    """Fit ``head`` on the labelled images (original size, in [0, 1]) and their landmarks."""
    head.fit(encoder(backbone, model, device), images, landmarks, size)


def locate(head: MatchingHead, backbone: Backbone, model: torch.nn.Module, images: list[np.ndarray], size: int,
           device: torch.device) -> tuple[np.ndarray, torch.Tensor]:
    """(M, N, 2) landmarks in each image's pixels and the (M, N, 2, 2) input-pixel covariances of
    the head's maps of where each may be (what sizes its uncertainty region)."""
    points, maps = head.locate(encoder(backbone, model, device), images, size)
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (len(images), maps.shape[1], 2) or maps.shape[-2:] != (size, size):
        raise PluginError(f"head {head.name!r}: locate returned points {tuple(points.shape)} and maps "
                          f"{tuple(maps.shape)} for {len(images)} images at {size} px")
    return points, conformal.covariance(maps)

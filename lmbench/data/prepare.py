"""A dataset's splits, loaded once and resized to the network's input size."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from lmbench.core.interfaces import Dataset
from lmbench.data.geometry import resize_image, to_input

#: the precision images are kept in: steps of at most 2**-11 in [0, 1], finer than an 8-bit
#: image's levels and about two 12-bit levels, at half the disk of float32 (256 px ISBI travels
#: in 31 MiB); every image is rounded to it, decoded now or read from the cache, so both give
#: the same numbers
STORED = torch.float16


@dataclass
class Prepared:
    """Samples at input size, with what is needed to map predictions back."""

    ids: list[str]
    images: torch.Tensor  # (M, 1, S, S) in [0, 1], float32 holding float16 values (``STORED``)
    landmarks: torch.Tensor  # (M, N, 2) in input pixels
    original_landmarks: np.ndarray  # (M, N, 2) in original pixels
    shapes: list[tuple[int, int]]  # original (H, W)
    spacings: list[float | None]

    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors and JSON for ``tensorfile.save``: nothing that needs a pickle."""
        tensors = {"images": self.images.to(STORED), "landmarks": self.landmarks,
                   "original_landmarks": torch.from_numpy(np.asarray(self.original_landmarks, dtype=np.float64)),
                   "shapes": torch.tensor(self.shapes, dtype=torch.int64).reshape(-1, 2)}
        return tensors, {"ids": self.ids, "spacings": self.spacings}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict) -> Prepared:
        return cls(ids=meta["ids"], images=tensors["images"].float(), landmarks=tensors["landmarks"],
                   original_landmarks=tensors["original_landmarks"].numpy(),
                   shapes=[tuple(shape) for shape in tensors["shapes"].tolist()], spacings=meta["spacings"])

    def subset(self, ids: list[str]) -> Prepared:
        index = [self.ids.index(i) for i in ids]
        return Prepared(
            ids=list(ids),
            images=self.images[index],
            landmarks=self.landmarks[index],
            original_landmarks=self.original_landmarks[index],
            shapes=[self.shapes[i] for i in index],
            spacings=[self.spacings[i] for i in index],
        )


def _load_resized(dataset: Dataset, sample_id: str, size: int, resize: str):
    sample = dataset.load(sample_id)
    return sample, resize_image(sample.image, size, resize)


def prepare(dataset: Dataset, ids: list[str], size: int, on_progress=lambda done, total: None,
            resize: str = "antialiased") -> Prepared:
    """Load and resize ``ids`` (``geometry.resize_image``), decoding in threads (image decoders
    and torch release the GIL)."""
    images, landmarks, originals, shapes, spacings = [], [], [], [], []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        loaded = pool.map(lambda i: _load_resized(dataset, i, size, resize), ids)
        for done, (sample, resized) in enumerate(loaded, start=1):
            on_progress(done, len(ids))
            shape = sample.image.shape[:2]
            images.append(resized)
            originals.append(np.asarray(sample.landmarks, dtype=np.float64))
            landmarks.append(torch.from_numpy(to_input(originals[-1], shape, size)).float())
            shapes.append(shape)
            spacings.append(sample.spacing)
    n = dataset.num_landmarks
    return Prepared(
        ids=list(ids),
        images=(torch.stack(images) if images else torch.zeros(0, 1, size, size)).to(STORED).float(),
        landmarks=torch.stack(landmarks) if landmarks else torch.zeros(0, n, 2),
        original_landmarks=np.stack(originals) if originals else np.zeros((0, n, 2)),
        shapes=shapes,
        spacings=spacings,
    )

"""Digital Hand Atlas (Gertych et al., CMIG 2007) with Payer et al.'s 37 landmarks.

Layout: ``jpg/<id>.jpg`` and ``labels/all.csv``, rows ``id,x1,y1,...,x37,y37`` in original
pixels, no header. The atlas has no pixel spacing: millimetres come from the known 50 mm
between two wrist landmarks, measured on each image's ground truth (the paper uses
landmarks 0 and 4, Payer et al. 1 and 5).

Pre-training pool: the training and validation images (``pretrain_pool = "splits"``), or, as the
published code takes it, the first ``train_size + val_size`` files of ``jpg/`` in name order
(``"files"``, the paper profile's), less those that are not a training or validation image
here (3142, which fails to load), reported by ``problems``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lmbench.api import (
    DataError,
    Dataset,
    PositiveFloat,
    PositiveInt,
    Sample,
    check_inside,
    find_image,
    parse_number,
    read_image,
    read_text_file,
)
from lmbench_plugins.xray.common import data_root, natural_sorted, sized_split, summarize_ids

NUM_LANDMARKS = 37


class DigitalHandAtlas(Dataset):
    @dataclass
    class Params:
        root: str = "$LMBENCH_DATA/hand"
        train_size: PositiveInt = 550
        val_size: PositiveInt = 59
        scale_pair: list[int] = field(default_factory=lambda: [0, 4])  # landmarks 50 mm apart
        scale_mm: PositiveFloat = 50.0
        exclude: list[str] = field(default_factory=lambda: ["3142"])  # fails to load in the release
        pretrain_pool: Literal["splits", "files"] = "splits"

    profile_defaults = {"paper": {"pretrain_pool": "files"}}

    unkeyed_params = frozenset({"root"})
    landmark_names = tuple(f"L{i}" for i in range(NUM_LANDMARKS))
    unit = "mm"
    thresholds = (2.0, 4.0, 10.0)

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        if len(p.scale_pair) != 2 or not all(0 <= i < NUM_LANDMARKS for i in p.scale_pair):
            raise DataError(f"hand: scale_pair must name two landmarks in 0..{NUM_LANDMARKS - 1}, got {p.scale_pair}")
        self.root = data_root(p.root, "hand")
        self.labels = read_label_table(self.root / "labels" / "all.csv")
        self._images = {i: find_image([self.root / "jpg"], i) for i in self.labels}
        usable = natural_sorted(i for i in self.labels if self._images[i] is not None and i not in p.exclude)
        self._splits = sized_split(usable, p.train_size, p.val_size)
        self._pool = self._splits["train"] + self._splits["val"]
        self._pool_left_out: list[str] = []
        if p.pretrain_pool == "files":
            names = sorted(os.listdir(self.root / "jpg"))[:p.train_size + p.val_size]
            first, usable_pool = [name.rsplit(".", 1)[0] for name in names], set(self._pool)
            self._pool_left_out = [i for i in first if i not in usable_pool]
            self._pool = [i for i in first if i in usable_pool]

    def split(self, name):
        return list(self._splits[name])

    def pretrain_pool(self):
        return list(self._pool)

    def load(self, sample_id):
        image = read_image(self._images[sample_id])
        landmarks = self.labels[sample_id]
        check_inside(landmarks, image.shape, self.root / "labels" / "all.csv")
        a, b = self.params.scale_pair
        distance = float(np.linalg.norm(landmarks[a] - landmarks[b]))
        if distance == 0:
            raise DataError(f"{self.root / 'labels' / 'all.csv'}: id {sample_id}: landmarks {a} and {b} coincide")
        return Sample(sample_id, image, landmarks, self.params.scale_mm / distance)

    def paper_axis_scale(self, truth, shape, spacing):
        """The published code measures the 50 mm between the pair in the 256 x 256 resize,
        where the aspect ratio is lost."""
        a, b = self.params.scale_pair
        distance = float(np.linalg.norm(truth[a] - truth[b]))
        scale = self.params.scale_mm / distance if distance else float("nan")
        return scale, scale

    def problems(self):
        found = []
        missing = natural_sorted(i for i, path in self._images.items() if path is None)
        if missing:
            found.append(f"{len(missing)} of {len(self.labels)} labelled ids have no image: {summarize_ids(missing)}")
        zeros = [f"{i} (landmark {j})" for i, pts in self.labels.items() for j in np.nonzero((pts == 0).any(axis=1))[0]]
        if zeros:
            found.append(f"{len(zeros)} landmarks with a 0.0 coordinate: {summarize_ids(natural_sorted(zeros))}")
        if self._pool_left_out:
            found.append(f"pre-training pool (the first {self.params.train_size + self.params.val_size} files of "
                         f"{self.root / 'jpg'}): {len(self._pool_left_out)} left out, not training or validation images: "
                         f"{summarize_ids(self._pool_left_out)}")
        return found


def read_label_table(path) -> dict[str, np.ndarray]:
    """id -> (37, 2) points from Payer et al.'s all.csv."""
    lines = read_text_file(path, "label file").splitlines()
    labels = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        if len(fields) != 1 + 2 * NUM_LANDMARKS:
            raise DataError(f"{path}: line {number}: expected an id and {2 * NUM_LANDMARKS} coordinates, got {len(fields) - 1}")
        sample_id = fields[0].strip()
        if sample_id in labels:
            raise DataError(f"{path}: line {number}: id {sample_id} appears twice")
        values = [parse_number(v, path, f"line {number}") for v in fields[1:]]
        labels[sample_id] = np.array(values).reshape(NUM_LANDMARKS, 2)
    if not labels:
        raise DataError(f"{path}: no labels")
    return labels

"""``images/<id>.<ext>`` and one table, ``landmarks.csv``: a header ``id,<name>_x,<name>_y,...``
and a row per image in its own pixels, the format ``lmbench predict`` writes, so that its
corrected predictions become a dataset. The last ids (in sorted order) are the test split,
the ones before them validation: fixed splits, the same on every machine."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmbench.api import (
    DataError,
    Dataset,
    NonNegativeFloat,
    Sample,
    UnitInterval,
    check_inside,
    find_image,
    parse_number,
    read_image,
    read_text_file,
)


class LandmarksCsv(Dataset):
    @dataclass
    class Params:
        root: Path = Path("$LMBENCH_DATA/landmarks-csv")  # a Path param: ~ and $VARS expanded
        table: str = "landmarks.csv"  # relative to root
        spacing: NonNegativeFloat = 0.0  # mm per pixel, the same for every image; 0: measure in pixels
        val_share: UnitInterval = 0.1
        test_share: UnitInterval = 0.2

    unkeyed_params = frozenset({"root"})  # where the data lives changes no number

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        path = p.root / p.table
        rows = list(csv.reader(read_text_file(path, "landmarks table").splitlines()))
        if not rows or len(rows[0]) < 3 or len(rows[0]) % 2 == 0:
            raise DataError(f"{path}: expected a header id,<name>_x,<name>_y,...")
        # the three attributes every dataset sets: here in __init__, as they depend on params
        self.landmark_names = [column.removesuffix("_x") for column in rows[0][1::2]]
        self.unit = "mm" if p.spacing else "px"
        self.thresholds = [2.0, 2.5, 3.0, 4.0] if p.spacing else [5.0, 10.0, 20.0]
        self._points = {}
        for number, row in enumerate(rows[1:], start=2):
            if len(row) != len(rows[0]):
                raise DataError(f"{path}: line {number}: {len(row)} fields, the header has {len(rows[0])}")
            values = [parse_number(v, path, f"line {number}") for v in row[1:]]
            self._points[row[0]] = np.array(values).reshape(-1, 2)
        ids = sorted(self._points)
        test = math.ceil(len(ids) * p.test_share)
        val = math.ceil(len(ids) * p.val_share)
        if len(ids) < test + val + 1:
            raise DataError(f"{path}: {len(ids)} images cannot fill train, val and test splits")
        self._splits = {"train": ids[: len(ids) - test - val], "val": ids[len(ids) - test - val: len(ids) - test],
                        "test": ids[len(ids) - test:]}

    def split(self, name):
        return self._splits[name]

    def load(self, sample_id):
        path = find_image([self.params.root / "images"], sample_id)
        if path is None:
            raise DataError(f"{self.params.root / 'images'}: no image for id {sample_id!r}")
        image = read_image(path)
        points = self._points[sample_id]
        check_inside(points, image.shape, path)
        return Sample(sample_id, image, points, self.params.spacing or None)

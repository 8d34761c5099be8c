"""A researcher's own data: a folder of images and their landmarks.

Landmarks come either from one CSV file (``id,x1,y1,x2,y2,...``, one row per image, an
optional header) or from a folder of labelme JSON files (one per image, one ``point`` shape
per landmark, labelled with the landmark's name). Coordinates are original-image pixels.
The split is given as id lists, or drawn from fractions with a seed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmbench.api import DataError, Dataset, Sample, check_inside, find_image, parse_number, read_image
from lmbench_plugins.xray.common import data_root, natural_sorted, summarize_ids


class FolderDataset(Dataset):
    @dataclass
    class Params:
        root: str = "$LMBENCH_DATA/folder"
        images: str = "images"  # folder of images, relative to root; the file stem is the id
        labels: str = "landmarks.csv"  # a CSV file, or a folder of labelme JSON files
        landmarks: list[str] = field(default_factory=list)  # names, in order; required for labelme
        spacing: float = 0.0  # mm per pixel; 0 measures in pixels
        thresholds: list[float] = field(default_factory=lambda: [2.0, 2.5, 3.0, 4.0])
        train: list[str] = field(default_factory=list)  # explicit split; else drawn from fractions
        val: list[str] = field(default_factory=list)
        test: list[str] = field(default_factory=list)
        fractions: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])
        seed: int = 0

    unkeyed_params = frozenset({"root"})

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self.root = data_root(p.root, "folder")
        source = self.root / p.labels
        if source.is_dir():
            if not p.landmarks:
                raise DataError(f"{source}: labelme labels need the landmark order in params.landmarks")
            self.labels = read_labelme_folder(source, p.landmarks)
        else:
            self.labels = read_landmark_csv(source)
        counts = {len(v) for v in self.labels.values()}
        if len(counts) != 1:
            raise DataError(f"{source}: images have different numbers of landmarks: {sorted(counts)}")
        count = counts.pop()
        if p.landmarks and len(p.landmarks) != count:
            raise DataError(f"{source}: {count} landmarks per image but params.landmarks names {len(p.landmarks)}")
        self.landmark_names = tuple(p.landmarks) or tuple(f"L{i}" for i in range(count))
        self.unit = "mm" if p.spacing > 0 else "px"
        self.thresholds = tuple(p.thresholds)
        self._images = {i: find_image([self.root / p.images], i) for i in self.labels}
        self._splits = self._make_splits(natural_sorted(i for i, path in self._images.items() if path))

    def _make_splits(self, ids: list[str]) -> dict[str, list[str]]:
        p = self.params
        if p.train or p.val or p.test:
            splits = {"train": p.train, "val": p.val, "test": p.test}
            for name, members in splits.items():
                unknown = [i for i in members if i not in ids]
                if unknown:
                    raise DataError(f"{self.root}: {name} ids without a labelled image: {summarize_ids(unknown)}")
            return {name: natural_sorted(members) for name, members in splits.items()}
        if len(p.fractions) != 3 or abs(sum(p.fractions) - 1) > 1e-6 or min(p.fractions) < 0:
            raise DataError(f"{self.root}: params.fractions must be three non-negative numbers summing to 1")
        order = [ids[i] for i in np.random.default_rng(p.seed).permutation(len(ids))]
        n_train = round(p.fractions[0] * len(ids))
        n_val = round(p.fractions[1] * len(ids))
        parts = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
        return {name: natural_sorted(part) for name, part in zip(("train", "val", "test"), parts)}

    def split(self, name):
        return list(self._splits[name])

    def load(self, sample_id):
        image = read_image(self._images[sample_id])
        landmarks = self.labels[sample_id]
        check_inside(landmarks, image.shape, self._images[sample_id])
        return Sample(sample_id, image, landmarks, self.params.spacing or None)

    def problems(self):
        missing = natural_sorted(i for i, path in self._images.items() if path is None)
        return [f"{len(missing)} labelled ids have no image in {self.params.images}/: {summarize_ids(missing)}"] if missing else []


def read_landmark_csv(path: Path) -> dict[str, np.ndarray]:
    """id -> (N, 2) points from rows ``id,x1,y1,...``; a first row that is not numeric is a header."""
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except FileNotFoundError:
        raise DataError(f"{path}: landmark file is missing") from None
    labels: dict[str, np.ndarray] = {}
    for number, row in enumerate(rows, start=1):
        row = [cell.strip() for cell in row]
        if not any(row):
            continue
        if number == 1 and len(row) > 1 and not _is_number(row[1]):
            continue  # header
        if len(row) < 3 or len(row) % 2 == 0:
            raise DataError(f"{path}: line {number}: expected an id then x,y pairs, got {len(row)} fields")
        if row[0] in labels:
            raise DataError(f"{path}: line {number}: id {row[0]!r} appears twice")
        values = [parse_number(v, path, f"line {number}") for v in row[1:]]
        labels[row[0]] = np.array(values).reshape(-1, 2)
    if not labels:
        raise DataError(f"{path}: no landmark rows")
    return labels


def read_labelme_folder(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    """id -> (N, 2) points from labelme files ``<id>.json``, ordered by ``names``."""
    labels = {}
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"{folder}: no labelme .json files")
    for path in files:
        try:
            shapes = json.loads(path.read_text())["shapes"]
            if not isinstance(shapes, list) or not all(isinstance(s, dict) for s in shapes):
                raise TypeError("'shapes' is not a list of objects")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a labelme file ({type(exc).__name__}: {exc})") from None
        points: dict[str, list[float]] = {}
        for shape in shapes:
            if shape.get("shape_type", "point") != "point":
                continue
            label = shape.get("label")
            if not isinstance(label, str):
                raise DataError(f"{path}: a point has no text label")
            if label in points:
                raise DataError(f"{path}: landmark {label!r} appears twice")
            try:
                (x, y), = shape["points"]
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{path}: landmark {label!r} is not a single point") from None
            points[label] = [parse_number(str(x), path, f"landmark {label!r}"), parse_number(str(y), path, f"landmark {label!r}")]
        missing = [n for n in names if n not in points]
        if missing:
            raise DataError(f"{path}: missing landmark(s) {', '.join(map(repr, missing))}")
        labels[path.stem] = np.array([points[n] for n in names])
    return labels


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False

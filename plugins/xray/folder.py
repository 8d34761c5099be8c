"""A researcher's own data: a folder of images and their landmarks, as annotated in practice.

Landmarks come from CSV files (``id,x1,y1,x2,y2,...``, one row per image, an optional header)
or folders of labelme JSON files (one per image, one ``point`` shape per landmark, labelled
with the landmark's name); several such sources are several annotators. Coordinates are
original-image pixels. The split is given as id lists, or drawn from fractions with a seed.

Bad annotations are collected, not raised one by one: a file naming a landmark twice,
missing one or naming an unknown one, a CSV row with the wrong number of fields, a
coordinate that is not a finite number, a point outside its image, an unreadable image.
Such samples are left out of every split and listed by ``excluded()`` (``on_problem =
"error"`` raises instead). With several annotators and ``annotator = "mean"``, each image's
landmarks are the mean over the annotators whose annotation of it is valid; an image valid
for none is left out, and one valid for only some is listed by ``problems()``.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from lmbench.api import (
    DataError,
    Dataset,
    NonNegativeFloat,
    NonNegativeInt,
    Sample,
    find_image,
    image_shape,
    outside_image,
    read_image_and_spacing,
    read_text_file,
)
from lmbench_plugins.xray.common import data_root, natural_sorted, summarize_ids


@dataclass
class Annotations:
    """One annotator's landmarks: the valid ones, and why the others are not."""

    points: dict[str, np.ndarray] = field(default_factory=dict)  # id -> (N, 2)
    image_paths: dict[str, Path] = field(default_factory=dict)  # id -> the image a labelme file names
    files: dict[str, str] = field(default_factory=dict)  # id -> where its annotation is: a file, or a line of one
    problems: dict[str, str] = field(default_factory=dict)  # id -> "file: what is wrong"


class FolderDataset(Dataset):
    @dataclass
    class Params:
        root: str = "$LMBENCH_DATA/folder"
        images: str = "images"  # folder of images, relative to root; the file stem is the id
        # a CSV file or a folder of labelme JSON files, relative to root; a list: one per annotator
        labels: str | list[str] = "landmarks.csv"
        annotator: str = "mean"  # "mean" of the valid annotations, or one entry of ``labels``
        landmarks: list[str] = field(default_factory=list)  # names, in order; required for labelme
        spacing: NonNegativeFloat = 0.0  # mm per pixel; 0: DICOM's own spacing, else pixels
        #: success-detection-rate thresholds in the dataset's unit; empty: 2, 2.5, 3 and 4 mm (the
        #: cephalometric convention) in mm, and 0.5, 1, 2 and 4% of the images' longer side in px
        thresholds: list[float] = field(default_factory=list)
        #: a prediction farther than this (in the unit) is a failure; 0: 10 mm, or 5% of the longer side in px
        failure_threshold: NonNegativeFloat = 0.0
        train: list[str] = field(default_factory=list)  # explicit split; else drawn from fractions
        val: list[str] = field(default_factory=list)
        test: list[str] = field(default_factory=list)
        fractions: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])
        seed: NonNegativeInt = 0
        on_problem: Literal["skip", "error"] = "skip"  # bad samples left out (and recorded), or an error

    unkeyed_params = frozenset({"root"})

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self.root = data_root(p.root, "folder")
        sources = [p.labels] if isinstance(p.labels, str) else list(p.labels)
        if not sources:
            raise DataError(f"{self.root}: params.labels names no annotation source")
        if p.annotator != "mean" and p.annotator not in sources:
            raise DataError(f"{self.root}: params.annotator {p.annotator!r} is not one of params.labels "
                            f"({', '.join(map(repr, sources))}) or 'mean'")
        self.annotators = {source: self._read(self.root / source) for source in sources}
        used = self.annotators if p.annotator == "mean" else {p.annotator: self.annotators[p.annotator]}
        count = self._landmark_count(used)
        self.landmark_names = tuple(p.landmarks) or tuple(f"L{i}" for i in range(count))
        self._excluded: dict[str, str] = {}
        self._partial: list[str] = []
        self._images = self._find_images(used)
        self._check_points(used)
        self.labels = self._combine(used)
        dicoms = sum(path.suffix.lower() == ".dcm" for path in self._images.values())
        # millimetres need every image's spacing: the params', or DICOM's own in a folder of DICOMs
        self.unit = "mm" if p.spacing > 0 or (self._images and dicoms == len(self._images)) else "px"
        if self.unit == "px" and dicoms:
            self._partial.append(f"{dicoms} DICOM files among {len(self._images) - dicoms} other images: every "
                                 f"image measured in pixels (set params.spacing to measure in mm)")
        self.thresholds, self.failure_threshold = self._thresholds()
        if self._excluded and p.on_problem == "error":
            why = next(iter(self._excluded.values()))
            raise DataError(f"{self.root}: {len(self._excluded)} sample(s) with bad annotations or images, first "
                            f"{why}; `lmbench data check` lists them all (on_problem = \"skip\" leaves them out)")
        self._splits = self._make_splits(natural_sorted(self._images))

    def _thresholds(self) -> tuple[tuple[float, ...], float]:
        """The SDR and failure thresholds in the dataset's unit: the params', or defaults that fit
        it (millimetre values read as pixels would call every prediction a failure)."""
        p = self.params
        if self.unit == "mm":
            return tuple(p.thresholds or (2.0, 2.5, 3.0, 4.0)), p.failure_threshold or 10.0
        side = max(max(image_shape(path)) for path in list(self._images.values())[:8]) if self._images else 100
        scaled = tuple(float(f"{side * share:.3g}") for share in (0.005, 0.01, 0.02, 0.04))
        return tuple(p.thresholds) or scaled, p.failure_threshold or float(f"{side * 0.05:.3g}")

    def _read(self, source: Path) -> Annotations:
        if source.is_dir():
            if not self.params.landmarks:
                raise DataError(f"{source}: labelme labels need the landmark order in params.landmarks")
            return read_labelme_folder(source, self.params.landmarks)
        return read_landmark_csv(source)

    def _landmark_count(self, used: dict[str, Annotations]) -> int:
        """``params.landmarks``' length, else the most common count; an annotation with another
        count becomes a problem of its own."""
        counts = Counter(len(points) for a in used.values() for points in a.points.values())
        if not counts:
            problems = [why for a in used.values() for why in a.problems.values()]
            first = f": {len(problems)} bad, first {problems[0]}" if problems else ": none found"
            raise DataError(f"{self.root}: no valid annotation in {', '.join(used)}{first}")
        expected = len(self.params.landmarks) or counts.most_common(1)[0][0]
        for annotator in used.values():
            for sample_id, points in list(annotator.points.items()):
                if len(points) != expected:
                    annotator.problems[sample_id] = (f"{annotator.files[sample_id]}: {len(points)} landmarks, "
                                                     f"expected {expected}")
                    del annotator.points[sample_id]
        return expected

    def _find_images(self, used: dict[str, Annotations]) -> dict[str, Path]:
        """id -> image: the one a labelme file names (its ``imagePath``), else ``<images>/<id>.*``."""
        folder = self.root / self.params.images
        found, missing = {}, []
        for sample_id in {i for a in used.values() for i in (*a.points, *a.problems)}:
            named = [a.image_paths[sample_id] for a in used.values() if sample_id in a.image_paths]
            candidates = [path for path in named if path.is_file()] + [folder / path.name for path in named]
            path = next((c for c in candidates if c.is_file()), None) or find_image([folder], sample_id)
            if path is None:
                missing.append(sample_id)
            else:
                found[sample_id] = path
        self._missing_images = missing
        return found

    def _check_points(self, used: dict[str, Annotations]) -> None:
        """Leave out samples whose image cannot be read; an annotation with a point outside its
        image becomes a problem of that annotator's."""
        for sample_id, path in list(self._images.items()):
            try:
                height, width = image_shape(path)
            except DataError as exc:
                self._excluded[sample_id] = str(exc)
                del self._images[sample_id]
                continue
            for annotator in used.values():
                points = annotator.points.get(sample_id)
                if points is None:
                    continue
                outside = outside_image(points, (height, width))
                if outside.any():
                    names = ", ".join(repr(self.landmark_names[i]) for i in np.flatnonzero(outside))
                    annotator.problems[sample_id] = (f"{annotator.files[sample_id]}: landmark(s) {names} lie "
                                                     f"outside the {width}x{height} image {path.name}")
                    del annotator.points[sample_id]

    def _combine(self, used: dict[str, Annotations]) -> dict[str, np.ndarray]:
        """id -> the mean of its valid annotations; ids valid for no annotator are excluded."""
        labels = {}
        for sample_id in natural_sorted(self._images):
            valid = [a.points[sample_id] for a in used.values() if sample_id in a.points]
            bad = [a.problems[sample_id] for a in used.values() if sample_id in a.problems]
            if not valid:
                self._excluded[sample_id] = "; ".join(bad)
                del self._images[sample_id]
                continue
            labels[sample_id] = np.mean(valid, axis=0)
            if bad:
                self._partial.append(f"{sample_id}: averaged over {len(valid)} of {len(used)} annotators "
                                     f"({'; '.join(bad)})")
        return labels

    def _make_splits(self, ids: list[str]) -> dict[str, list[str]]:
        p = self.params
        if p.train or p.val or p.test:
            splits = {"train": p.train, "val": p.val, "test": p.test}
            for name, members in splits.items():
                unknown = [i for i in members if i not in ids and i not in self._excluded]
                if unknown:
                    raise DataError(f"{self.root}: {name} ids without a labelled image: {summarize_ids(unknown)}")
            return {name: natural_sorted(i for i in members if i in ids) for name, members in splits.items()}
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
        image, own_spacing = read_image_and_spacing(self._images[sample_id])
        spacing = self.params.spacing or own_spacing
        if self.unit == "mm" and spacing is None:
            raise DataError(f"{self._images[sample_id]}: no pixel spacing (set params.spacing, in mm per pixel)")
        return Sample(sample_id, image, self.labels[sample_id], spacing)

    def excluded(self):
        return dict(self._excluded)

    def annotations(self, sample_id):
        if len(self.annotators) < 2:
            return {}
        return {name: a.points[sample_id] for name, a in self.annotators.items() if sample_id in a.points}

    def problems(self):
        missing = natural_sorted(self._missing_images)
        lines = [f"{len(missing)} labelled ids have no image in {self.params.images}/: {summarize_ids(missing)}"] if missing else []
        return lines + self._partial


def read_landmark_csv(path: Path) -> Annotations:
    """Rows ``id,x1,y1,...``; a first row that is not numeric is a header. A bad row, or an id
    on two rows, is a problem of that id."""
    rows = list(csv.reader(read_text_file(path, "landmark file").splitlines()))
    found = Annotations()
    lines: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        row = [cell.strip() for cell in row]
        if not any(row):
            continue
        if number == 1 and len(row) > 1 and not _is_number(row[1]):
            continue  # header
        sample_id = row[0]
        if sample_id in lines:
            found.points.pop(sample_id, None)
            found.problems[sample_id] = f"{path}: id {sample_id!r} appears on lines {lines[sample_id]} and {number}"
            continue
        lines[sample_id] = number
        if len(row) < 3 or len(row) % 2 == 0:
            found.problems[sample_id] = f"{path}: line {number}: expected an id then x,y pairs, got {len(row)} fields"
            continue
        values = [_finite(v) for v in row[1:]]
        if None in values:
            bad = row[1 + values.index(None)]
            found.problems[sample_id] = f"{path}: line {number}: coordinate {bad!r} is not a finite number"
            continue
        found.points[sample_id] = np.array(values).reshape(-1, 2)
        found.files[sample_id] = f"{path}: line {number}"
    if not lines:
        raise DataError(f"{path}: no landmark rows")
    return found


def read_labelme_folder(folder: Path, names: list[str]) -> Annotations:
    """Landmarks from labelme files ``<id>.json``, ordered by ``names``; each file's problems
    (all of them, on one line) instead of its points where it has any."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"{folder}: no labelme .json files")
    found = Annotations()
    for path in files:
        try:
            document = json.loads(read_text_file(path, "labelme file"))
            shapes = document["shapes"]
            if not isinstance(shapes, list) or not all(isinstance(s, dict) for s in shapes):
                raise TypeError("'shapes' is not a list of objects")
        except DataError as exc:
            found.problems[path.stem] = str(exc)
            continue
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            found.problems[path.stem] = f"{path}: not a labelme file ({type(exc).__name__}: {exc})"
            continue
        points, wrong = _labelme_points(shapes, names)
        if wrong:
            found.problems[path.stem] = f"{path}: {'; '.join(wrong)}"
        else:
            found.points[path.stem] = np.array([points[n] for n in names])
            found.files[path.stem] = str(path)
        if isinstance(document.get("imagePath"), str) and document["imagePath"]:
            found.image_paths[path.stem] = path.parent / document["imagePath"].replace("\\", "/")
    return found


def _labelme_points(shapes: list[dict], names: list[str]) -> tuple[dict[str, list[float]], list[str]]:
    points: dict[str, list[float]] = {}
    twice, unknown, wrong = [], [], []
    for shape in shapes:
        if shape.get("shape_type", "point") != "point":
            continue
        label = shape.get("label")
        if not isinstance(label, str):
            wrong.append("a point has no text label")
            continue
        try:
            (x, y), = shape["points"]
        except (KeyError, TypeError, ValueError):
            wrong.append(f"landmark {label!r} is not a single point")
            continue
        if label not in names:
            unknown.append(label)
        elif label in points:
            twice.append(label)
        xy = [_finite(x), _finite(y)]
        if None in xy:
            wrong.append(f"landmark {label!r} has coordinates ({x}, {y}), not finite numbers")
        points[label] = xy
    missing = [n for n in names if n not in points]
    for what, labels in (("appear(s) twice", twice), ("missing", missing), ("not in params.landmarks", unknown)):
        if labels:
            wrong.append(f"landmark(s) {', '.join(map(repr, dict.fromkeys(labels)))} {what}")
    return points, wrong


def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _is_number(text: str) -> bool:
    return _finite(text) is not None or text.strip().lower() in ("nan", "inf", "-inf")

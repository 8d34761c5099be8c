"""``lmbench data check``: load every sample of a dataset and report what is there and what is wrong."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from lmbench.core.errors import DataError
from lmbench.core.interfaces import Dataset


@dataclass
class CheckReport:
    dataset: str
    splits: dict[str, int] = field(default_factory=dict)
    image_sizes: tuple[tuple[int, int], tuple[int, int]] | None = None  # smallest and largest (H, W)
    landmark_range: tuple[np.ndarray, np.ndarray] | None = None  # per axis min and max (x, y)
    spacing_range: tuple[float, float] | None = None
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.errors and sum(self.splits.values()) > 0


def check_dataset(name: str, dataset: Dataset) -> CheckReport:
    report = CheckReport(name, warnings=list(dataset.problems()))
    ids = []
    for split in ("train", "val", "test"):
        members = dataset.split(split)
        report.splits[split] = len(members)
        if not members:
            report.warnings.append(f"the {split} split is empty: runs need all three splits")
        ids.extend(members)

    def inspect(sample_id):
        try:
            sample = dataset.load(sample_id)
        except DataError as exc:
            return str(exc)
        if sample.landmarks.shape != (dataset.num_landmarks, 2):
            return f"{name} sample {sample_id}: landmarks have shape {sample.landmarks.shape}, expected ({dataset.num_landmarks}, 2)"
        return sample.image.shape, sample.landmarks.min(axis=0), sample.landmarks.max(axis=0), sample.spacing

    with ThreadPoolExecutor() as pool:
        outcomes = list(pool.map(inspect, dict.fromkeys(ids)))
    found = [o for o in outcomes if not isinstance(o, str)]
    report.errors = [o for o in outcomes if isinstance(o, str)]
    if found:
        areas = [shape[0] * shape[1] for shape, *_ in found]
        report.image_sizes = (found[int(np.argmin(areas))][0], found[int(np.argmax(areas))][0])
        report.landmark_range = (np.min([lo for _, lo, _, _ in found], axis=0), np.max([hi for _, _, hi, _ in found], axis=0))
        spacings = [s for *_, s in found if s is not None]
        if spacings:
            report.spacing_range = (min(spacings), max(spacings))
    return report

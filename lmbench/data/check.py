"""``lmbench data check``: load every sample of a dataset and report what is there and what is wrong."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from lmbench.core.errors import DataError
from lmbench.core.interfaces import Dataset


@dataclass
class AnnotatorAgreement:
    """Mean distance between annotators' points: the accuracy a detector cannot meaningfully beat."""

    annotators: int  # most annotations of one image
    images: int
    unit: str
    overall: float
    per_landmark: dict[str, float]


@dataclass
class CheckReport:
    dataset: str
    splits: dict[str, int] = field(default_factory=dict)  # samples per split that load
    image_sizes: tuple[tuple[int, int], tuple[int, int]] | None = None  # smallest and largest (H, W)
    landmark_range: tuple[np.ndarray, np.ndarray] | None = None  # per axis min and max (x, y)
    spacing_range: tuple[float, float] | None = None
    agreement: AnnotatorAgreement | None = None
    unit: str = "px"  # what the metrics will measure in, with the thresholds they will use
    thresholds: tuple[float, ...] = ()
    failure_threshold: float = 10.0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one per sample left out, or failing to load
    failing: int = 0  # samples of the splits that fail to load: a run would stop on the first

    @property
    def usable(self) -> bool:
        """Whether a run can use it: a sample loads and every sample of the splits does (an
        empty split is a warning)."""
        return sum(self.splits.values()) > 0 and not self.failing


@dataclass
class Checked:
    """What the report needs of a sample that loads: not its pixels, so that a dataset's
    full-size images are never all in memory at once."""

    id: str
    shape: tuple[int, int]
    landmarks: np.ndarray
    spacing: float | None


def check_dataset(name: str, dataset: Dataset) -> CheckReport:
    report = CheckReport(name, unit=dataset.unit, thresholds=tuple(dataset.thresholds),
                         failure_threshold=dataset.failure_threshold, warnings=list(dataset.problems()),
                         errors=[f"left out: {why}" for why in dataset.excluded().values()])
    members = {split: dataset.split(split) for split in ("train", "val", "test")}

    def inspect(sample_id):
        try:
            sample = dataset.load(sample_id)
        except DataError as exc:
            return str(exc)
        if sample.landmarks.shape != (dataset.num_landmarks, 2):
            return f"{name} sample {sample_id}: landmarks have shape {sample.landmarks.shape}, expected ({dataset.num_landmarks}, 2)"
        return Checked(sample.id, sample.image.shape[:2], sample.landmarks, sample.spacing)

    with ThreadPoolExecutor() as pool:
        ids = list(dict.fromkeys(i for split in members.values() for i in split))
        outcomes = dict(zip(ids, pool.map(inspect, ids)))
    found = [o for o in outcomes.values() if not isinstance(o, str)]
    report.errors += [o for o in outcomes.values() if isinstance(o, str)]
    report.failing = sum(isinstance(o, str) for o in outcomes.values())
    for split, split_ids in members.items():
        report.splits[split] = sum(not isinstance(outcomes[i], str) for i in split_ids)
        if not report.splits[split]:
            report.warnings.append(f"the {split} split is empty: runs need all three splits")
    if found:
        areas = [s.shape[0] * s.shape[1] for s in found]
        report.image_sizes = (found[int(np.argmin(areas))].shape, found[int(np.argmax(areas))].shape)
        report.landmark_range = (np.min([s.landmarks.min(axis=0) for s in found], axis=0),
                                 np.max([s.landmarks.max(axis=0) for s in found], axis=0))
        spacings = [s.spacing for s in found if s.spacing is not None]
        if spacings:
            report.spacing_range = (min(spacings), max(spacings))
        report.agreement = annotator_agreement(dataset, found)
    return report


def annotator_agreement(dataset: Dataset, samples: list[Checked]) -> AnnotatorAgreement | None:
    """Per landmark, the distance between two annotators' points (the mean over pairs where an
    image has more), in the dataset's unit, averaged over the images annotated more than once."""
    distances, most = [], 0
    for sample in samples:
        points = list(dataset.annotations(sample.id).values())
        if len(points) < 2:
            continue
        most = max(most, len(points))
        pairs = [np.linalg.norm(a - b, axis=-1) for i, a in enumerate(points) for b in points[i + 1:]]
        scale = sample.spacing if dataset.unit == "mm" and sample.spacing else 1.0
        distances.append(np.mean(pairs, axis=0) * scale)
    if not distances:
        return None
    table = np.stack(distances)
    return AnnotatorAgreement(most, len(distances), dataset.unit, float(table.mean()),
                              {n: float(v) for n, v in zip(dataset.landmark_names, table.mean(axis=0))})

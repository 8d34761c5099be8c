"""Mean radial error (MRE) and success detection rate (SDR), in the dataset's unit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmbench.core.errors import DataError


def radial_errors(predicted: np.ndarray, truth: np.ndarray, spacings: Sequence[float | None], unit: str) -> np.ndarray:
    """(M, N, 2) original-image points -> (M, N) distances, in mm via each image's spacing or in px."""
    pixels = np.linalg.norm(np.asarray(predicted, float) - np.asarray(truth, float), axis=-1)
    if unit == "px":
        return pixels
    if any(s is None for s in spacings):
        raise DataError("the dataset measures in mm but an image has no pixel spacing")
    return pixels * np.asarray(spacings, float)[:, None]


def sdr_name(threshold: float) -> str:
    return f"sdr@{threshold:g}"


def failure_name(threshold: float) -> str:
    return f"failure@{threshold:g}"


def summarize(errors: np.ndarray, thresholds: Sequence[float], landmark_names: Sequence[str],
              failure_threshold: float | None = None) -> list[tuple[str, str, float]]:
    """(metric, landmark, value) rows: MRE, its standard deviation, SDR (percent, distance <= t)
    and the failure rate (percent, distance > ``failure_threshold``), over all landmarks
    ("all") and per landmark."""
    columns = [("all", errors.ravel())] + [(name, errors[:, i]) for i, name in enumerate(landmark_names)]
    rows = []
    for landmark, values in columns:
        rows.append(("mre", landmark, float(values.mean())))
        rows.append(("mre_std", landmark, float(values.std())))
        for t in thresholds:
            rows.append((sdr_name(t), landmark, float((values <= t).mean() * 100)))
        if failure_threshold is not None:
            rows.append((failure_name(failure_threshold), landmark, float((values > failure_threshold).mean() * 100)))
    return rows


def summarize_regions(errors: np.ndarray, fixed: np.ndarray, adaptive: np.ndarray,
                      landmark_names: Sequence[str]) -> list[tuple[str, str, float]]:
    """(metric, landmark, value) rows of uncertainty regions of (M, N) radii around points
    with (M, N) errors: coverage (percent of points inside) and mean radius, of the fixed and
    the adaptive regions, over all landmarks and per landmark."""
    rows = []
    for landmark, index in [("all", slice(None))] + [(name, i) for i, name in enumerate(landmark_names)]:
        for suffix, radii in (("", fixed), ("_adaptive", adaptive)):
            rows.append((f"coverage{suffix}", landmark, float((errors[:, index] <= radii[:, index]).mean() * 100)))
            rows.append((f"radius{suffix}", landmark, float(radii[:, index].mean())))
    return rows

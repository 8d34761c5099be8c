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


def summarize(errors: np.ndarray, thresholds: Sequence[float], landmark_names: Sequence[str]) -> list[tuple[str, str, float]]:
    """(metric, landmark, value) rows: MRE, its standard deviation and SDR (percent, distance <= t),
    over all landmarks ("all") and per landmark."""
    columns = [("all", errors.ravel())] + [(name, errors[:, i]) for i, name in enumerate(landmark_names)]
    rows = []
    for landmark, values in columns:
        rows.append(("mre", landmark, float(values.mean())))
        rows.append(("mre_std", landmark, float(values.std())))
        for t in thresholds:
            rows.append((sdr_name(t), landmark, float((values <= t).mean() * 100)))
    return rows

"""Which differences are real: intervals, paired tests and ranks from per-image values.

Every run stores each test image's radial errors, so a leaderboard cell is a mean over
(seeds x images) values, and two methods can be compared on the same images.

- ``bootstrap_interval``: percentile bootstrap of that mean, resampling seeds (when there are
  several) and then test images. scipy.stats.bootstrap resamples one level only, so the two
  index draws are made here; with one seed the result is scipy's percentile interval.
- ``worse_pvalue``: one-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon) of "this method
  is worse than the best" on per-image values averaged over seeds, paired by image.
- ``holm``: Holm's step-down correction of a family of p-values.
- ``friedman_ranks``: mean ranks over blocks (dataset x label count), the Friedman test
  (scipy.stats.friedmanchisquare) and the Nemenyi critical difference (Demšar, JMLR 2006).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

#: recorded beside every interval: the same seed gives the same interval
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 2000


def point_values(columns: dict[str, np.ndarray], metric: str) -> np.ndarray:
    """Per-point values whose mean is ``metric``, from a predictions table's ``error`` (and
    ``radius``, ``radius_adaptive``) columns: the error for "mre", 100 or 0 for "sdr@t",
    "failure@t" and the coverages, the radius for the radii."""
    errors = columns["error"]
    if metric == "mre":
        return errors
    if metric.startswith(("sdr@", "failure@")):
        threshold = float(metric.split("@")[1])
        return ((errors <= threshold) if metric.startswith("sdr") else (errors > threshold)) * 100.0
    radius = columns["radius_adaptive" if metric.endswith("_adaptive") else "radius"]
    return (errors <= radius) * 100.0 if metric.startswith("coverage") else radius


def per_image(image_ids: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """image id -> the mean of its points' ``values``."""
    ids, inverse = np.unique(image_ids, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    return dict(zip(ids.tolist(), means.tolist()))


def bootstrap_interval(values: np.ndarray, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (seeds, images): each resample draws the
    seeds with replacement, then the images with replacement (the same images for every seed,
    since the seeds were tested on the same images)."""
    rng = np.random.default_rng(seed)
    n_seeds, n_images = values.shape
    seeds = rng.integers(0, n_seeds, (resamples, n_seeds)) if n_seeds > 1 else np.zeros((resamples, 1), int)
    images = rng.integers(0, n_images, (resamples, n_images))
    means = values[seeds[:, :, None], images[:, None, :]].mean(axis=(1, 2))
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def worse_pvalue(candidate: np.ndarray, best: np.ndarray, lower_is_better: bool) -> float:
    """p-value of "candidate is worse than best" from paired per-image values."""
    difference = candidate - best if lower_is_better else best - candidate
    if not np.any(difference):
        return 1.0  # identical on every image: nothing to test
    return float(stats.wilcoxon(difference, alternative="greater").pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the given order (an adjusted p below alpha rejects at alpha)."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    scaled = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted.tolist()


@dataclass
class Ranking:
    methods: list[str]
    mean_ranks: list[float]
    rank_intervals: list[tuple[float, float]]  # bootstrap over blocks
    blocks: int
    pvalue: float | None  # Friedman; None with fewer than 3 methods or 2 blocks
    critical_difference: float | None  # Nemenyi, at ``alpha``
    alpha: float


def friedman_ranks(table: np.ndarray, methods: list[str], alpha: float = 0.05, confidence: float = 0.95,
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Ranking:
    """Ranks of ``methods`` (columns) over blocks (rows) of a lower-is-better ``table``.

    The critical difference is the Nemenyi test's: two methods whose mean ranks differ by less
    are not significantly different at ``alpha``. Rank intervals resample the blocks."""
    blocks, k = table.shape
    ranks = np.apply_along_axis(stats.rankdata, 1, table)
    rng = np.random.default_rng(seed)
    resampled = ranks[rng.integers(0, blocks, (resamples, blocks))].mean(axis=1)
    low, high = np.quantile(resampled, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0)
    pvalue = cd = None
    if k >= 3 and blocks >= 2:
        pvalue = float(stats.friedmanchisquare(*table.T).pvalue)
        q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
        cd = float(q * np.sqrt(k * (k + 1) / (6 * blocks)))
    return Ranking(methods, ranks.mean(axis=0).tolist(), list(zip(low.tolist(), high.tolist())), blocks,
                   pvalue, cd, alpha)

"""Conformal uncertainty regions: their guarantee on simulated splits, the adaptive regions'
advantage where the heatmap's spread tracks the error, and each head's spread."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmbench.config.matrix import load_matrix
from lmbench.evaluate import conformal
from lmbench.reporting.leaderboard import build_boards, cell_text
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench.testing import make

from conftest import tiny_matrix

LEVEL = 0.9


def simulated_split(rng, n, landmarks=4):
    """Errors whose scale follows each point's spread (a heatmap that knows when it is unsure)."""
    spreads = rng.lognormal(0.0, 0.6, (n, landmarks)) * np.arange(1, landmarks + 1)
    errors = spreads * np.sqrt(rng.chisquare(2, (n, landmarks)))  # a 2-d Gaussian's radius
    return errors, spreads


@pytest.mark.parametrize("n_val", [19, 60])
def test_coverage_is_at_least_the_level_and_not_far_above(n_val):
    rng = np.random.default_rng(0)
    covered = {"fixed": [], "adaptive": []}
    for _ in range(2000):
        val, test = simulated_split(rng, n_val), simulated_split(rng, 50)
        for kind, radii in zip(("fixed", "adaptive"), conformal.radii(conformal.calibrate(*val, LEVEL), test[1])):
            covered[kind].append(test[0] <= radii)
    ceiling = math.ceil((n_val + 1) * LEVEL) / (n_val + 1)  # the exact expected coverage, per landmark
    margin = 0.01  # about 8 standard errors of the mean over the splits; one rank off is 0.015 or more
    for kind, hits in covered.items():
        observed = np.mean(hits, axis=(0, 1))  # per landmark, over the simulated splits
        assert np.all(observed >= LEVEL - margin), (kind, observed)
        assert np.all(observed <= ceiling + margin), (kind, observed)


def test_adaptive_regions_are_smaller_where_the_spread_tracks_the_error():
    rng = np.random.default_rng(1)
    val, test = simulated_split(rng, 200), simulated_split(rng, 2000)
    fixed, adaptive = conformal.radii(conformal.calibrate(*val, LEVEL), test[1])
    assert (test[0] <= fixed).mean() == pytest.approx(LEVEL, abs=0.02)
    assert (test[0] <= adaptive).mean() == pytest.approx(LEVEL, abs=0.02)
    assert adaptive.mean() < 0.9 * fixed.mean()


def test_too_few_validation_images_give_an_unbounded_region():
    regions = conformal.calibrate(np.ones((5, 2)), np.ones((5, 2)), LEVEL)  # ceil(6 * 0.9) = 6 > 5
    assert np.isinf(regions["radius"]).all() and np.isinf(regions["scale"]).all()
    assert conformal.conformal_quantile(np.arange(1.0, 10.0)[:, None], LEVEL)[0] == 9.0  # rank ceil(9) = 9 of 9


def gaussian_map(size, centre, sigma):
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    return torch.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))


def test_covariance_of_a_gaussian_map_is_its_variance_and_spread_follows_the_axes():
    heat = gaussian_map(64, (30.0, 20.0), 3.0)
    cov = conformal.covariance((heat / heat.sum())[None, None])[0, 0]
    np.testing.assert_allclose(cov.numpy(), [[9.0, 0.0], [0.0, 9.0]], atol=1e-3)
    # 2 px per input pixel across, 1 down: the spread of an isotropic map in those units
    assert conformal.spread(cov.numpy(), np.array([2.0, 1.0])) == pytest.approx(math.sqrt((9 * 4 + 9) / 2), rel=1e-4)


@pytest.mark.parametrize("head", ["gaussian", "contour-hugging", "gaussian-bce"])
def test_each_heads_spread_grows_with_its_heatmaps_width(head):
    strategy = make("head", head)
    spreads = []
    for sigma in (1.5, 4.0):
        heat = gaussian_map(48, (20.0, 25.0), sigma).float()
        # logits shaped as each head's trained output would be around the landmark
        logits = {"gaussian": 10 * heat, "contour-hugging": heat.log().clamp_min(-80),
                  "gaussian-bce": torch.logit(heat.clamp(1e-6, 1 - 1e-6))}[head][None, None].repeat(1, 2, 1, 1)
        probabilities = strategy.probabilities(logits)
        assert probabilities.shape == logits.shape
        np.testing.assert_allclose(probabilities.sum((-2, -1)).numpy(), 1.0, rtol=1e-5)
        spreads.append(float(conformal.spread(conformal.covariance(probabilities)[0, 0].numpy(), np.ones(2))))
    assert spreads[1] > 1.5 * spreads[0], spreads


def test_a_run_stores_its_regions_and_the_leaderboard_shows_them(tmp_path):
    path = tiny_matrix(tmp_path, seeds=(0, 1), labels=(2,))
    path.write_text("conformal_level = 0.75\n" + path.read_text())  # 4 validation images: rank 4 of 4
    m = load_matrix(path)
    assert run_matrix(m, quiet=True).ok == 2
    columns = ["mre", "coverage", "radius", "coverage_adaptive", "radius_adaptive", "failure@10"]
    (board,) = build_boards([m.results_dir], metrics=columns)
    (row,) = board.rows
    assert board.metrics == columns and set(row.intervals) == set(columns)
    expected = {name: [] for name in columns}
    for run in results.read_runs([m.results_dir]):
        assert run["conformal_level"] == 0.75
        val = results.read_table("predictions", run["_file"], split="val").to_pydict()
        test = results.read_table("predictions", run["_file"], split="test").to_pydict()
        errors, radius = np.array(test["error"]), np.array(test["radius"])
        # the fixed radius of each landmark is its largest validation error (rank 4 of 4)
        for landmark, r in zip(test["landmark"], radius):
            assert r == pytest.approx(max(e for e, name in zip(val["error"], val["landmark"]) if name == landmark))
        expected["coverage"].append((errors <= radius).mean() * 100)
        expected["coverage_adaptive"].append((errors <= np.array(test["radius_adaptive"])).mean() * 100)
        expected["radius"].append(radius.mean())
    for name in ("coverage", "coverage_adaptive", "radius"):
        assert row.values[name][0] == pytest.approx(np.mean(expected[name]))
    assert board.best(2, "coverage") is None and board.best(2, "radius") == row.values["radius"][0]
    assert cell_text(row, "coverage") != "-"


def test_reliability_follows_the_level_on_exchangeable_splits():
    rng = np.random.default_rng(2)
    val, test = simulated_split(rng, 400), simulated_split(rng, 4000)
    levels = [0.5, 0.7, 0.9]
    observed = conformal.reliability(*val, *test, levels)
    for kind in ("fixed", "adaptive"):
        np.testing.assert_allclose(observed[kind], levels, atol=0.03)

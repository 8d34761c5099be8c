"""Intervals, paired tests and ranks: their statistical behaviour on generated data, and the
leaderboard's tie marks on hand-made results."""

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats
from test_leaderboard import DATASET_PARAMS

from lmbench.reporting import stats
from lmbench.reporting.comparisons import rank_methods
from lmbench.reporting.figures import write_report
from lmbench.reporting.formats import to_json, to_markdown
from lmbench.reporting.leaderboard import build_boards
from lmbench.store import results

from conftest import fake_run_row


def per_image_errors(rng, images=60, shift=0.0):
    """Skewed per-image radial errors, as real ones are, and a second method's on the same
    images: the first plus ``shift`` plus image-level noise."""
    first = rng.gamma(2.0, 1.5, images)
    return first, first + shift + rng.normal(0, 0.8, images)


def test_the_paired_test_finds_a_real_shift():
    rng = np.random.default_rng(1)
    best, worse = per_image_errors(rng, shift=0.6)
    assert stats.worse_pvalue(worse, best, lower_is_better=True) < 0.01
    assert stats.worse_pvalue(best, worse, lower_is_better=True) > 0.5  # the other direction is not "worse"
    assert stats.worse_pvalue(-worse, -best, lower_is_better=False) < 0.01  # SDR: higher is better


def test_without_a_shift_it_rejects_at_about_its_level():
    rng = np.random.default_rng(2)
    rejected = [stats.worse_pvalue(b, a, lower_is_better=True) < 0.05
                for a, b in (per_image_errors(rng) for _ in range(400))]
    assert np.mean(rejected) <= 0.05 + 0.03  # binomial sd at 400 draws is 0.011


def test_intervals_cover_the_true_mean_at_about_their_nominal_rate():
    rng = np.random.default_rng(3)
    true_mean, covered = 3.0, []
    for trial in range(300):
        values = rng.gamma(2.0, true_mean / 2.0, (1, 50))
        low, high = stats.bootstrap_interval(values, 0.9, resamples=1000, seed=trial)
        covered.append(low <= true_mean <= high)
    assert 0.84 <= np.mean(covered) <= 0.95  # nominal 0.90; percentile intervals run a little short


def test_with_one_seed_the_interval_is_scipys_percentile_bootstrap():
    values = np.random.default_rng(4).gamma(2.0, 1.5, (1, 80))
    ours = stats.bootstrap_interval(values, 0.95, resamples=4000)
    theirs = scipy_stats.bootstrap((values[0],), np.mean, confidence_level=0.95, n_resamples=4000,
                                   method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), abs=0.05)


def test_seed_spread_widens_the_interval():
    rng = np.random.default_rng(5)
    images = rng.gamma(2.0, 1.5, 80)
    same = np.stack([images, images, images])
    spread = same + np.array([[-1.0], [0.0], [1.0]])  # three trainings that disagree
    width = [np.subtract(*stats.bootstrap_interval(v)[::-1]) for v in (same, spread)]
    assert width[1] > 1.5 * width[0]


def test_holm_matches_its_definition():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.3, 0.02]) == pytest.approx([0.3, 0.04])  # never below an earlier step
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_the_critical_difference_is_demsars():
    table = np.random.default_rng(6).normal(size=(10, 4))
    ranking = stats.friedman_ranks(table, ["a", "b", "c", "d"])
    assert ranking.critical_difference == pytest.approx(2.569 * np.sqrt(4 * 5 / (6 * 10)), abs=0.002)  # his Table 5
    assert sum(ranking.mean_ranks) == pytest.approx(10)  # 1 + 2 + 3 + 4
    clear = np.tile([1.0, 2.0, 3.0, 4.0], (10, 1))
    assert stats.friedman_ranks(clear, ["a", "b", "c", "d"]).pvalue < 1e-4


def write_scored_run(folder, pretrainer, labels, seed, errors):
    """A run whose stored metrics and per-image predictions agree: ``errors`` (images, landmarks)."""
    key = f"{pretrainer}-{labels}-{seed}"
    row = fake_run_row(key, pretrainer, labels, seed, matrix="hand", dataset_params=DATASET_PARAMS,
                       thresholds="[2.0]", finished_at="2026-01-01T00:00:00")
    metrics = [{"split": "test", "eval_mode": "native", "metric": "mre", "landmark": landmark, "value": float(v),
                "unit": "mm"} for landmark, v in [("all", errors.mean()), ("L0", errors[:, 0].mean()),
                                                  ("L1", errors[:, 1].mean())]]
    metrics.append({"split": "test", "eval_mode": "native", "metric": "sdr@2", "landmark": "all",
                    "value": float((errors <= 2).mean() * 100), "unit": "mm"})
    predictions = [{"split": "test", "image_id": f"{i:03d}", "landmark_index": j, "landmark": f"L{j}", "x": 0.0,
                    "y": 0.0, "x_true": 0.0, "y_true": 0.0, "error": float(errors[i, j]), "unit": "mm"}
                   for i in range(errors.shape[0]) for j in range(errors.shape[1])]
    results.write_run(folder, row, metrics, predictions)


@pytest.fixture
def hand_made(tmp_path):
    """At each label count: "best"; "close", the same plus noise; "worse", 1 mm worse on every
    image. Three seeds each, 40 test images, 2 landmarks."""
    rng = np.random.default_rng(7)
    for labels in (1, 5):
        base = rng.gamma(2.0, 1.0, (40, 2)) + 3.0 / labels
        for seed in range(3):
            noise = rng.normal(0, 0.05, (40, 2))
            write_scored_run(tmp_path, "best", labels, seed, base + noise)
            write_scored_run(tmp_path, "close", labels, seed, base + rng.normal(0, 0.3, (40, 2)))
            write_scored_run(tmp_path, "worse", labels, seed, base + noise + 1.0)
    return tmp_path


def test_the_leaderboard_marks_ties_with_the_best(hand_made):
    (board,) = build_boards([hand_made], ci="interval")
    bold = {(r.method[0], r.labels): board.bold(r, "mre") for r in board.rows}
    assert bold == {("best", 1): True, ("close", 1): True, ("worse", 1): False,
                    ("best", 5): True, ("close", 5): True, ("worse", 5): False}
    for row in board.rows:
        low, high = row.intervals["mre"]
        assert low < row.values["mre"][0] < high
    markdown = to_markdown([board])
    assert "not significantly worse" in markdown and "95% percentile bootstrap" in markdown
    (parsed,) = json.loads(to_json([board]))
    worse = next(r for r in parsed["rows"] if r["pre_training"] == "worse" and r["labels"] == 1)
    assert worse["mre_p_vs_best"] < 0.05 and worse["mre_bold"] is False and worse["mre_ci_low"] < worse["mre"]
    assert parsed["bootstrap_seed"] == stats.BOOTSTRAP_SEED
    (sdr_only,) = build_boards([hand_made], metrics=["sdr@2"])
    assert all("sdr@2" in r.intervals and "mre" not in r.values for r in sdr_only.rows)


def test_significance_zero_bolds_the_best_mean_only(hand_made):
    (board,) = build_boards([hand_made], significance=0)
    for labels in (1, 5):
        group = [r for r in board.rows if r.labels == labels]
        lowest = min(group, key=lambda r: r.values["mre"][0])
        assert [r for r in group if board.bold(r, "mre")] == [lowest]
    assert "no paired test" in board.legend()
    (paper,) = build_boards([hand_made], eval_mode="paper")
    assert not paper.rows  # the hand-made runs hold native metrics only


def test_the_report_ranks_methods_and_maps_landmarks(hand_made, tmp_path):
    boards = build_boards([hand_made])
    ranking = rank_methods(boards)
    assert ranking.methods == ["best / gaussian", "close / gaussian", "worse / gaussian"]
    assert ranking.mean_ranks[2] == 3.0 and ranking.blocks == 2
    figures = write_report([hand_made], tmp_path / "report")
    names = {f.name for f in figures}
    assert {"critical-difference.png", "synthetic-landmarks.png"} <= names
    index = (tmp_path / "report" / "index.md").read_text()
    assert "| Landmark | best / gaussian |" in index and "Friedman test over the blocks" in index

"""Paper-compatible evaluation against a direct implementation of the published rules."""

import math

import numpy as np
import pytest

from lmbench.config.matrix import load_matrix
from lmbench.evaluate.paper_eval import paper_errors
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench_plugins.synthetic.dataset import SyntheticHands
from lmbench_plugins.xray.hand import DigitalHandAtlas
from lmbench_plugins.xray.isbi2015 import Isbi2015

from conftest import lmbench_cli, tiny_matrix


def disk_truth(x, y, width, height):
    """The published rule, pixel by pixel: point at 256 px, rounded, its half-maximum disk of a
    sigma-5 Gaussian inside the image, the disk's centroid, rounded."""
    cx = round((x + 0.5) * 256 / width - 0.5)
    cy = round((y + 0.5) * 256 / height - 0.5)
    pixels = [(i, j) for j in range(256) for i in range(256)
              if math.exp(-((i - cx) ** 2 + (j - cy) ** 2) / (2 * 5.0**2)) >= 0.5]
    return round(sum(p[0] for p in pixels) / len(pixels)), round(sum(p[1] for p in pixels) / len(pixels))


def rounded_prediction(p, input_size):
    return round((p + 0.5) * 256 / input_size - 0.5)


RNG = np.random.default_rng(0)
SHAPE = (2400, 1935)  # ceph images: 2400 high, 1935 wide
TRUTH = np.stack([RNG.uniform([0, 0], [1935 - 1, 2400 - 1], size=(3, 2)),
                  np.array([[1.0, 2.0], [1934.0, 2399.0], [960.0, 3.0]])])  # near the borders too
PREDICTED = RNG.uniform(0, 127, size=(2, 3, 2))  # at a 128 px input


def test_ceph_paper_mode_follows_the_published_rules(tmp_path):
    isbi = Isbi2015(Isbi2015.Params(root=str(tmp_path)))
    got = paper_errors(isbi, PREDICTED, TRUTH, [SHAPE, SHAPE], [0.1, 0.1], 128)
    for i in range(2):
        for j in range(3):
            tx, ty = disk_truth(*TRUTH[i, j], width=1935, height=2400)
            px, py = (rounded_prediction(v, 128) for v in PREDICTED[i, j])
            expected = math.hypot((px - tx) * 2400 / 256 * 0.1, (py - ty) * 1935 / 256 * 0.1)  # axes swapped
            assert got[i, j] == pytest.approx(expected), (i, j)


def test_paper_mode_differs_from_native_where_the_rules_say_so(tmp_path):
    isbi = Isbi2015(Isbi2015.Params(root=str(tmp_path)))
    # a prediction exactly on the truth: native error 0, paper error from rounding alone
    truth = np.array([[[1000.3, 1200.7]]])
    exact = (truth + 0.5) * 128 / np.array([1935, 2400]) - 0.5
    assert paper_errors(isbi, exact, truth, [SHAPE], [0.1], 128)[0, 0] < 0.1 * 2400 / 256  # at most a rounding step
    # a pure x offset of 10 px at 256: native scales it by the width (1935 px), paper by the height (2400 px)
    predicted = np.array([[[63.75, 63.75]]])  # (128, 128) at 256 px from a 128 px input
    truth = (np.array([[[118.0, 128.0]]]) + 0.5) * np.array([1935, 2400]) / 256 - 0.5
    paper = paper_errors(isbi, predicted, truth, [SHAPE], [0.1], 128)[0, 0]
    native_predicted = (predicted + 0.5) * np.array([1935, 2400]) / 128 - 0.5
    native = np.linalg.norm(native_predicted - truth) * 0.1
    assert native == pytest.approx(10 * 1935 / 256 * 0.1)
    assert paper == pytest.approx(10 * 2400 / 256 * 0.1)


def test_hand_paper_mode_measures_its_50_mm_at_256_px(tmp_path):
    (tmp_path / "labels").mkdir()
    points = RNG.uniform([100, 100], [1100, 1500], size=(37, 2))
    (tmp_path / "labels" / "all.csv").write_text("3001," + ",".join(f"{v:.3f}" for v in points.ravel()) + "\n")
    hand = DigitalHandAtlas(DigitalHandAtlas.Params(root=str(tmp_path), train_size=0, val_size=0))
    shape = (1600, 1200)
    predicted = RNG.uniform(0, 255, size=(1, 37, 2))
    got = paper_errors(hand, predicted, points[None], [shape], [None], 256)
    truth = np.array([disk_truth(x, y, width=1200, height=1600) for x, y in points])
    scale = 50 / np.linalg.norm(truth[0] - truth[4])
    rounded = np.round(predicted[0])
    np.testing.assert_allclose(got[0], np.linalg.norm(rounded - truth, axis=1) * scale)


def test_every_run_stores_both_evaluation_modes(tmp_path):
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(1,)))
    assert run_matrix(matrix, quiet=True).ok == 1
    (run,) = results.read_runs([matrix.results_dir])
    rows = results.read_table("metrics", run["_file"]).to_pylist()
    mre = {r["eval_mode"]: r["value"] for r in rows if r["split"] == "test" and r["metric"] == "mre" and r["landmark"] == "all"}
    assert set(mre) == {"native", "paper"} and mre["native"] != mre["paper"]
    # the synthetic set keeps the default rule: true spacing, stretched to 256 px
    synthetic = SyntheticHands()
    assert synthetic.paper_axis_scale(None, (100, 80), 0.8) == (80 / 256 * 0.8, 100 / 256 * 0.8)
    shown = lmbench_cli("leaderboard", str(matrix.results_dir), "--eval-mode", "paper")
    assert shown.returncode == 0, shown.stderr
    assert "paper evaluation" in shown.stdout and f"{mre['paper']:.2f}" in shown.stdout

"""Matching detectors: a head fitted on the labelled images' dense features, with no fine-tuning."""

import json

import numpy as np
import pytest
import torch

from lmbench.config.matrix import load_matrix, parse_matrix
from lmbench.detector import matching
from lmbench.detector.saved import load_detector
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench_plugins.matching.head import FeatureMatch
from lmbench_plugins.smp_unet.backbone import SmpUnet
from lmbench_plugins.synthetic.dataset import render

from conftest import lmbench_cli, tiny_matrix

MATCH = """
[[heads]]
name = "feature-match"
params = { zooms = [1, 2] }
save_models = true
"""


def test_a_fitted_matcher_finds_the_landmarks_of_a_shifted_image_below_the_input_grid():
    # random convolutional features move with the image: matching must recover a shift that is
    # not a whole number of input pixels, from one labelled image
    torch.manual_seed(0)
    backbone = SmpUnet(SmpUnet.Params(encoder="tu-resnet10t", encoder_depth=3, decoder_channels=[16, 8, 8]))
    model = backbone.build(11, 32)
    image, landmarks = render(np.random.default_rng(3), 160, 128, 0.0)
    shift = np.array([7.0, -5.0])  # original pixels: 1.75 and 1 input pixels at 32 px
    shifted = np.roll(image, (int(shift[1]), int(shift[0])), axis=(0, 1))
    head = FeatureMatch(FeatureMatch.Params(zooms=[1, 2, 4], prior=0.0))
    matching.fit(head, backbone, model, [image], [landmarks], 32, torch.device("cpu"))
    points, maps = head.locate(matching.encoder(backbone, model, torch.device("cpu")), [shifted], 32)
    located, covariances = matching.locate(head, backbone, model, [shifted], 32, torch.device("cpu"))
    assert np.array_equal(located, points) and covariances.shape == (1, 11, 2, 2)
    inside = np.all((landmarks + shift > 8) & (landmarks + shift < [120, 152]), axis=1)  # away from the wrap
    errors = np.linalg.norm(points[0] - (landmarks + shift), axis=1)[inside]
    assert inside.sum() >= 8 and np.median(errors) < 1.5, errors
    assert maps.shape == (1, 11, 32, 32) and torch.allclose(maps.sum((-2, -1)), torch.ones(1, 11))


def test_matching_rows_fit_without_fine_tuning_and_their_detector_predicts_the_same(tmp_path):
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(2,), extra=MATCH))
    assert run_matrix(matrix, quiet=True).ok == 2
    runs = {r["head"]: r for r in results.read_runs([matrix.results_dir])}
    row = runs["feature-match"]
    assert row["epochs"] == 0 and row["best_epoch"] == 0  # nothing fine-tuned
    assert runs["gaussian"]["epochs"] > 0
    measures = json.loads(row["health_measures"])
    assert measures["dense_spread"] > 0 and measures["dense_spread"] == measures["dense_spread_init"]  # scratch
    assert results.read_table("curves", row["_file"]) is None  # no fine-tuning curve
    # the saved detector carries the fitted templates: it finds the points the run scored
    detector = load_detector(row)
    assert any(name.startswith("template_") for name in vars(detector.head))
    predictions = results.read_table("predictions", row["_file"], split="test").to_pylist()
    dataset = matrix.runs[0].dataset.instantiate()
    ids = sorted({p["image_id"] for p in predictions})
    points, radii = detector.predict([dataset.load(i).image for i in ids], torch.device("cpu"))
    scored = np.array([[p["x"], p["y"]] for p in sorted(predictions, key=lambda p: (ids.index(p["image_id"]),
                                                                                      p["landmark_index"]))])
    assert np.allclose(points.reshape(-1, 2), scored, atol=1e-4)
    assert radii is not None and radii.shape == points.shape[:2]  # infinite: 4 validation images cannot calibrate 90%
    out = lmbench_cli("export", str(matrix.results_dir), "--run", row["run_key"], "--out", str(tmp_path / "d.onnx"))
    assert out.returncode != 0 and "lmbench predict runs it" in out.stderr + out.stdout


def test_a_matching_head_is_pruned_where_the_backbone_exposes_no_feature_maps(tmp_path, monkeypatch):
    import tomllib

    from lmbench.api import Backbone
    from lmbench_plugins.yolo_universal.backbone import YoloUniversal

    monkeypatch.setattr(YoloUniversal, "features", Backbone.features)  # a backbone without feature maps
    text = tiny_matrix(tmp_path, extra=MATCH + '\n[[backbones]]\nname = "yolo-universal"\n').read_text()
    matrix = parse_matrix(tomllib.loads(text), tmp_path / "m.toml")
    reasons = [why for run, why in matrix.pruned if run.head.name == "feature-match"]
    assert any("exposes no feature maps" in why for why in reasons), reasons


def test_gu2net_exposes_its_local_encoder_levels_coarsest_first_and_matching_finds_points_on_them():
    from lmbench.testing import check_matching_head
    from lmbench_plugins.yolo_universal.backbone import YoloUniversal

    backbone = YoloUniversal(YoloUniversal.Params(width=8, depth=3, global_channels=16))
    maps = backbone.features(backbone.build(3, 32), torch.rand(2, 1, 32, 32))
    assert [m.shape[-1] for m in maps] == [8, 16, 32] and all(m.shape[0] == 2 for m in maps)
    # random weights: the two finer levels, the whole image then a 2x window, find the fitted points
    check_matching_head(FeatureMatch(FeatureMatch.Params(levels=[[1, 2], [2]], zooms=[1.0, 2.0])), backbone)


def test_the_ddpm_unet_exposes_its_decoder_levels_coarsest_first():
    from lmbench_plugins.ddpm.backbone import DdpmUNet

    backbone = DdpmUNet(DdpmUNet.Params(preset="smoke"))
    maps = backbone.features(backbone.build(3, 32), torch.rand(2, 1, 32, 32))
    sizes = [m.shape[-1] for m in maps]
    assert len(maps) == 3 and sizes == sorted(sizes) and sizes[-1] == 32 and all(m.shape[0] == 2 for m in maps)


@pytest.mark.parametrize("zooms", [[2], []])
def test_zooms_start_with_the_whole_image(zooms):
    from lmbench.api import PluginError

    with pytest.raises(PluginError, match="zooms must start at 1"):
        FeatureMatch.Params(zooms=zooms)


def test_off_a_terminal_each_finished_run_prints_one_line_with_what_is_left(tmp_path):
    out = lmbench_cli("run", "--matrix", str(tiny_matrix(tmp_path, labels=(1, 2), epochs=1)))
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("[")]
    assert [line[:10] for line in lines] == ["[1/2] ok s", "[2/2] ok s"], out.stdout
    assert all("test MRE" in line and "min left" in line for line in lines)


def test_a_matching_row_no_better_than_the_labelled_mean_shape_is_flagged():
    from lmbench.evaluate import health

    from conftest import random_split

    labelled, val = random_split(3, seed=1), random_split(5, seed=2)
    val.original_landmarks = val.landmarks.double().numpy()  # 32 px images: input and original pixels agree
    mean = labelled.landmarks.double().mean(0).numpy()
    baseline = float(np.linalg.norm(val.original_landmarks - (mean + 0.5) * 1.0 + 0.5, axis=-1).mean())
    assert health.mean_shape_findings(baseline * 0.5, labelled, val, "px") == []
    (finding,) = health.mean_shape_findings(baseline * 2, labelled, val, "px")
    assert finding.startswith("matching no better than the labelled images' mean shape")
    assert f"against {baseline:.2f} px" in finding

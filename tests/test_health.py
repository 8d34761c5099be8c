"""Health verdicts: a run that learned nothing is flagged, from its curve, what its pre-training
hands on, its held-out loss and its fine-tuning; the flag reaches the leaderboard and report."""

import csv
import io
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from lmbench.config.matrix import load_matrix
from lmbench.evaluate import health
from lmbench.reporting.figures import write_report
from lmbench.reporting.formats import to_csv, to_latex, to_markdown
from lmbench.reporting.leaderboard import build_boards
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench_plugins.ddpm.backbone import DdpmUNet
from lmbench_plugins.ddpm.pretrainer import DdpmPretrainer
from lmbench_plugins.smp_unet.backbone import SmpUnet
from lmbench_plugins.ssl.simclrv2 import SimCLRv2
from lmbench_plugins.synthetic.dataset import SyntheticHands

from conftest import lmbench_cli, pretrain_context, tiny_matrix

SETTINGS = health.HealthSettings()
SMALL = SmpUnet(SmpUnet.Params(encoder="tu-resnet10t", encoder_depth=3, decoder_channels=[32, 16, 8]))


def synthetic_images(count: int, size: int = 32) -> torch.Tensor:
    dataset = SyntheticHands(SyntheticHands.Params(n_train=count, n_val=1, n_test=1, height=size, width=size))
    return torch.stack([torch.from_numpy(dataset.load(i).image)[None] for i in dataset.split("train")]).float()


def test_a_curve_that_never_leaves_chance_is_flagged_and_one_that_does_is_not():
    at_chance = health.curve_measures([5.6, 5.55, 5.545, 5.545], chance=5.545, tail=0.5)
    above = health.curve_measures([1.2, 2.4, 2.5], chance=1.95, tail=0.5)
    learnt = health.curve_measures([5.5, 4.0, 3.0, 2.9], chance=5.545, tail=0.5)
    assert at_chance["last_loss"] == pytest.approx(5.545) and learnt["first_loss"] == 5.5
    assert "did not leave chance" in health.pretrain_findings(at_chance, SETTINGS)[0]
    assert "did not leave chance" in health.pretrain_findings(above, SETTINGS)[0]
    assert health.pretrain_findings(learnt, SETTINGS) == []
    assert health.pretrain_findings(health.curve_measures([1.0, 0.9], None, 0.5), SETTINGS) == []  # no chance known


def test_an_encoder_whose_features_collapsed_is_flagged_against_its_initialisation():
    pool = synthetic_images(24)
    pretrainer = SimCLRv2()
    torch.manual_seed(0)  # the initialisation the check compares with
    fresh = SMALL.build_part("unet-encoder", 5, 32).state_dict()
    healthy = health.pretrain_measures(pretrainer, SMALL, fresh, pool, pool[:0], 5, 0, torch.device("cpu"), SETTINGS)
    assert healthy["spread"] == pytest.approx(healthy["spread_init"], rel=1e-4)  # the same weights, the same seed
    assert health.pretrain_findings(healthy, SETTINGS) == []
    # the deepest stage's convolutions zeroed: every image gets the same features
    collapsed = {k: torch.zeros_like(v) if k.startswith("model.layer2") and v.ndim == 4 else v
                 for k, v in fresh.items()}
    measures = health.pretrain_measures(pretrainer, SMALL, collapsed, pool, pool[:0], 5, 0, torch.device("cpu"),
                                        SETTINGS)
    assert measures["spread"] < 1e-3 < healthy["spread"]
    assert "features collapsed" in health.pretrain_findings(measures, SETTINGS)[0]


def test_a_probe_that_cannot_run_is_reported_and_never_fails_the_run():
    class Unprobed(SimCLRv2):
        def features(self, part, images):
            return part(images, torch.zeros(len(images)))  # a part whose forward takes one argument

    pool = synthetic_images(8)
    weights = SMALL.build_part("unet-encoder", 5, 32).state_dict()
    measures = health.pretrain_measures(Unprobed(), SMALL, weights, pool, pool[:0], 5, 0, torch.device("cpu"), SETTINGS)
    assert list(measures) == ["probe_error"] and measures["probe_error"].startswith("TypeError: ")
    assert health.pretrain_findings(measures, SETTINGS)[0].startswith("health probe failed (TypeError: ")


def test_ddpm_is_checked_on_held_out_images_against_predicting_zero():
    images = synthetic_images(12)
    backbone = DdpmUNet(DdpmUNet.Params(preset="smoke"))
    pretrainer = DdpmPretrainer(DdpmPretrainer.Params(iterations=60, batch_size=6, accumulation=1, lr=2e-3,
                                                      augment=False))
    saved = {}
    pretrainer.pretrain(pretrain_context(images[:8], backbone, saved))
    held_out = images[8:]
    unet = backbone.build_part("ddpm-unet", 1, 32)
    unet.load_state_dict(saved[60])
    loss, chance = pretrainer.held_out_loss(backbone, unet.eval(), held_out)
    assert chance == pytest.approx(1.0, abs=0.05)  # the mean square of unit noise
    assert loss < 0.5 * chance
    zero, chance_again = pretrainer.held_out_loss(backbone, lambda x, t: torch.zeros_like(x[:, -1:]), held_out)
    assert zero == pytest.approx(chance) and chance_again == chance  # the same fixed noise every time
    flagged = health.pretrain_findings({"held_out_loss": zero, "held_out_chance": chance}, SETTINGS)
    assert "does not denoise" in flagged[0]
    assert health.pretrain_findings({"held_out_loss": loss, "held_out_chance": chance}, SETTINGS) == []


def test_fine_tuning_still_improving_or_predicting_one_point_is_flagged():
    rng = np.random.default_rng(0)
    spread = rng.uniform(0, 64, size=(10, 3, 2))
    assert health.finetune_findings(40, 29, spread, SETTINGS) == []
    assert health.finetune_findings(40, 40, spread, SETTINGS) == ["fine-tuning still improving at its last epoch (40)"]
    one_point = spread.copy()
    one_point[:, 1] = [12.0, 30.0]
    assert health.finetune_findings(40, 12, one_point, SETTINGS) == [
        "predictions collapsed to one point for 1 of 3 landmarks"]
    quiet = health.HealthSettings(still_improving=False)
    assert health.finetune_findings(40, 40, spread, quiet) == []


SIMCLR = '[[pretrainers]]\nname = "simclrv2"\nparams = { iterations = 6, batch_size = 4 }'


def test_every_run_has_a_verdict_and_every_pretraining_its_curve(tmp_path):
    """A matrix's [health] thresholds reach the verdicts, never the run keys; the curve goes to
    pretrain_curves/; the flag reaches every leaderboard format, --failures and the report."""
    strict = tiny_matrix(tmp_path, labels=(1,), pretrainers=SIMCLR, extra=(
        "[health]\nmin_prediction_spread = 1000.0\ncurve_tolerance = 0.9\nstill_improving = false"))
    (tmp_path / "plain").mkdir()
    plain = load_matrix(tiny_matrix(tmp_path / "plain", labels=(1,), pretrainers=SIMCLR))
    matrix = load_matrix(strict)
    assert [r.run_key for r in matrix.runs] == [r.run_key for r in plain.runs]
    assert run_matrix(matrix, quiet=True).ok == 1
    run = results.read_runs([matrix.results_dir])[0]
    # strict thresholds: a loss not 90% below chance, and a spread under 1000 px, are flagged
    assert run["health"].split("; ") == [
        f"pre-training did not leave chance (loss {json.loads(run['health_measures'])['last_loss']:.3f}, chance 1.946)",
        "predictions collapsed to one point for 11 of 11 landmarks"]
    measures = json.loads(run["health_measures"])
    assert measures["chance"] == pytest.approx(math.log(7))  # NT-Xent over 2 x 4 views
    assert {"first_loss", "last_loss", "spread", "spread_init"} <= set(measures)
    curve = pq.read_table(matrix.results_dir / "pretrain_curves" / f"{run['pretrain_key']}.parquet").to_pylist()
    assert [r["step"] for r in curve] == [1, 2, 3, 4, 5, 6]
    assert curve[0]["loss"] == measures["first_loss"] and curve[0]["chance"] == measures["chance"]

    boards = build_boards([matrix.results_dir])
    assert [r["health"] for r in csv.DictReader(io.StringIO(to_csv(boards)))] == [boards[0].rows[0].health]
    assert "(1 of 1 runs)" in boards[0].rows[0].health
    markdown, latex = to_markdown(boards), to_latex(boards)
    assert "simclrv2 †1" in markdown and "†1 simclrv2 / gaussian, 1 labels: pre-training did not leave chance" in markdown
    assert r"simclrv2 $\dagger$1" in latex
    listed = lmbench_cli("leaderboard", str(matrix.results_dir), "--failures")
    assert listed.returncode == 0 and f"flagged {run['run_key']}" in listed.stdout

    figures = write_report([matrix.results_dir], tmp_path / "report")
    assert tmp_path / "report" / "pretraining-curves.png" in figures
    index = (tmp_path / "report" / "index.md").read_text()
    assert "## Training health" in index and "simclrv2 (xray recipe) / smp-unet" in index
    assert run["run_key"] in index.split("Flagged runs:")[1]


def test_a_verdict_survives_a_cache_hit_and_healthy_runs_say_ok(tmp_path):
    path = tiny_matrix(tmp_path, labels=(1, 2), epochs=3, pretrainers=SIMCLR,
                       extra="[health]\nmin_prediction_spread = 0.0\nstill_improving = false\ncurve_tolerance = -10.0")
    matrix = load_matrix(path)
    run_matrix(matrix, quiet=True)
    rows = results.read_runs([matrix.results_dir])
    assert [r["health"] for r in rows] == ["ok", "ok"]
    assert sorted(r["pretrain_cache_hit"] for r in rows) == [False, True]
    assert rows[0]["health_measures"] == rows[1]["health_measures"]  # probed once, kept in the cache entry

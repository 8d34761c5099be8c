"""Real x-ray data through the whole pipeline, and `lmbench data check` on each dataset."""

import json

import pytest

from lmbench.config.matrix import load_matrix
from lmbench.run.schedule import run_matrix
from lmbench.store import results

from conftest import ROOT, SHARED_DATA, lmbench_cli

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared x-ray data not found at {SHARED_DATA}")


@pytest.mark.parametrize(
    "dataset, expected, gap",
    [
        ("isbi2015", "130 train, 20 val, 250 test", None),
        ("chest", "152 train, 29 val, 32 test", "train: 43 of 195 protocol images missing"),
        ("hand", "9 train, 0 val, 0 test", "901 of 910 labelled ids have no image"),
    ],
)
def test_data_check_passes_and_reports_the_gaps(dataset, expected, gap):
    out = lmbench_cli("data", "check", "--dataset", dataset, "--root", str(SHARED_DATA / dataset))
    assert out.returncode == 0, out.stdout + out.stderr
    assert expected in out.stdout and "usable" in out.stdout
    if gap:
        assert gap in out.stdout


def test_data_check_fails_on_a_missing_root(tmp_path):
    out = lmbench_cli("data", "check", "--dataset", "isbi2015", "--root", str(tmp_path / "none"))
    assert out.returncode == 2
    assert out.stdout.strip() == f"error: {tmp_path / 'none'}: isbi2015 data root does not exist"


def test_isbi_runs_end_to_end_in_mm_and_the_quick_matrix_validates(tmp_path, monkeypatch):
    monkeypatch.setenv("LMBENCH_DATA", str(SHARED_DATA))
    quick = load_matrix(ROOT / "matrices" / "isbi2015-quick.toml")
    assert quick.runs and quick.runs[0].dataset.params["root"] == str(SHARED_DATA / "isbi2015")
    path = tmp_path / "isbi.toml"
    path.write_text(f"""
name = "isbi-tiny"
profile = "smoke"
image_size = 32
labels = [1]
output = "{tmp_path}"
[finetune]
epochs = 1
samples_per_epoch = 4
[[datasets]]
name = "isbi2015"
[[pretrainers]]
name = "scratch"
[[backbones]]
name = "smp-unet"
params = {{ encoder_depth = 3, decoder_channels = [16, 16, 8] }}
[[heads]]
name = "gaussian"
""")
    m = load_matrix(path)
    assert run_matrix(m, quiet=True).ok == 1
    (run,) = results.read_runs([m.results_dir])
    assert run["unit"] == "mm" and json.loads(run["thresholds"]) == [2.0, 2.5, 3.0, 4.0]
    predictions = results.read_table("predictions", run["_file"], split="test").to_pylist()
    assert len(predictions) == 250 * 19
    assert results.read_table("predictions", run["_file"], split="val").num_rows == 20 * 19
    first = predictions[0]
    assert first["image_id"] == "151"
    assert first["error"] == pytest.approx(0.1 * ((first["x"] - first["x_true"]) ** 2 + (first["y"] - first["y_true"]) ** 2) ** 0.5)

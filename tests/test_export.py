"""``lmbench export``: a saved detector as ONNX, run by onnxruntime with numpy decoding, finds
the landmarks ``lmbench predict`` finds on the same images."""

import csv

import numpy as np
import pytest
from PIL import Image

from lmbench.config.matrix import load_matrix
from lmbench.deploy import OnnxDetector, decode
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench_plugins.synthetic.dataset import render

from conftest import lmbench_cli, tiny_matrix

pytest.importorskip("onnxruntime", reason="the deploy extra (onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the export extra (onnx, onnxscript) is not installed")

HEADS = """save_models = true

[[heads]]
name = "contour-hugging"
label = "CH subpixel calibrated"
params = { subpixel = true, temperature = true }
save_models = true

[[heads]]
name = "gaussian"
label = "Gaussian region"
params = { decode = "region" }
save_models = true
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three saved detectors (Gaussian contour and region rules, calibrated sub-pixel
    contour-hugging) and a folder of images of three sizes, none the network's."""
    folder = tmp_path_factory.mktemp("export")
    matrix = load_matrix(tiny_matrix(folder, labels=(2,), extra=HEADS))
    assert run_matrix(matrix, quiet=True).ok == 3
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(7)
    for i, (height, width) in enumerate([(100, 80), (131, 97), (64, 150)]):
        image, _ = render(rng, height, width, 0.02)
        Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(images / f"x{i}.png")
    return matrix.results_dir, images, results.read_runs([matrix.results_dir])


def read_predictions(path, count):
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    return {row[0]: np.array(row[1:1 + 2 * count], dtype=float).reshape(count, 2) for row in rows}


def test_the_onnx_detector_finds_what_predict_finds(trained, tmp_path):
    results_dir, images, runs = trained
    seen = set()
    for run in runs:
        out = tmp_path / f"{run['head_label']}.onnx"
        shown = lmbench_cli("export", str(results_dir), "--run", run["run_key"], "--out", str(out))
        assert shown.returncode == 0, shown.stdout + shown.stderr
        predicted = lmbench_cli("predict", str(results_dir), "--images", str(images), "--run", run["run_key"],
                                "--out", str(tmp_path / run["run_key"]))
        assert predicted.returncode == 0, predicted.stdout + predicted.stderr
        detector = OnnxDetector(out)
        assert detector.run["run_key"] == run["run_key"] and detector.input_size == 32
        assert len(detector.landmark_names) == 11
        seen.add(detector.decoding["rule"])
        expected = read_predictions(tmp_path / run["run_key"] / "predictions.csv", 11)
        for path in sorted(images.iterdir()):
            pixels = np.asarray(Image.open(path), dtype=np.float32)  # raw 16-bit values: the graph scales them
            points = detector.landmarks(pixels)
            assert points.shape == (11, 2)
            assert np.abs(points - expected[path.stem]).max() < 1e-3, run["head_label"]  # the CSV rounds to 5e-4
    assert seen == {"contour", "region", "argmax"}


def test_exported_metadata_and_a_batch_of_images(trained, tmp_path):
    results_dir, _, runs = trained
    (run,) = [r for r in runs if r["head_label"] == "CH subpixel calibrated"]
    out = tmp_path / "ch.onnx"
    assert lmbench_cli("export", str(results_dir), "--run", run["run_key"], "--out", str(out)).returncode == 0
    detector = OnnxDetector(out)
    assert detector.decoding["subpixel"] is True and len(detector.decoding["temperatures"]) == 11
    assert "min-max" in detector.metadata["normalisation"]
    rng = np.random.default_rng(1)
    batch = np.stack([render(rng, 90, 70, 0.02)[0] for _ in range(3)])[:, None]
    together = decode(detector.session.run(None, {"image": batch})[0], detector.decoding)
    alone = np.stack([decode(detector.logits(image[0]), detector.decoding)[0] for image in batch])
    assert np.abs(together - alone).max() < 1e-4


def test_export_names_what_is_missing_in_one_line(trained, tmp_path):
    results_dir, _, _ = trained
    shown = lmbench_cli("export", str(results_dir), "--run", "nope", "--out", str(tmp_path / "x.onnx"))
    assert shown.returncode == 2 and shown.stdout.startswith("error: no run 'nope'") and shown.stdout.count("\n") == 1
    import onnx

    with pytest.raises(ValueError, match="not an lmbench export"):
        tensor = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
        identity = onnx.helper.make_node("Identity", ["x"], ["y"])
        graph = onnx.helper.make_graph([identity], "plain", [tensor], [tensor.__class__(name="y", type=tensor.type)])
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
        onnx.save_model(model, tmp_path / "plain.onnx")
        OnnxDetector(tmp_path / "plain.onnx")


def test_weights_over_the_protobuf_limit_go_beside_the_graph(trained, tmp_path, monkeypatch):
    """The paper's U-Net (2.2 GB of fp32 weights) exceeds protobuf's 2 GiB: its weights are
    written to ``<file>.data``, which onnxruntime reads from beside the graph."""
    from lmbench.detector import export
    from lmbench.detector.saved import load_detector

    _, _, runs = trained
    detector = load_detector(runs[0])
    inline = export.export_onnx(detector, tmp_path / "inline.onnx")
    monkeypatch.setattr(export, "EXTERNAL_DATA_BYTES", 0)
    beside = export.export_onnx(detector, tmp_path / "beside.onnx")
    assert (tmp_path / "beside.onnx.data").stat().st_size > 0.9 * inline.stat().st_size
    assert beside.stat().st_size < 0.1 * inline.stat().st_size
    image = render(np.random.default_rng(3), 90, 70, 0.02)[0]
    assert np.array_equal(OnnxDetector(beside).landmarks(image), OnnxDetector(inline).landmarks(image))

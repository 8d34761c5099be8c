"""No file lmbench reads can run code: a pickle planted where lmbench reads a saved detector,
pre-trained weights or the resized-data cache is never unpickled, and the line says why."""

import logging

import pytest
import torch

from lmbench.config.matrix import load_matrix
from lmbench.core.errors import CorruptFile, LmbenchError
from lmbench.detector.saved import load_detector, model_file
from lmbench.run.schedule import run_matrix
from lmbench.store import results, tensorfile

from conftest import lmbench_cli, tiny_matrix


class Payload:
    """Unpickling this creates ``path``: proof that a file ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def plant(path, marker):
    """A torch.save file at ``path`` whose unpickling would create ``marker``."""
    probe = path.with_name("probe.pt")
    torch.save({"weights": torch.zeros(2), "payload": Payload(marker)}, probe)
    torch.load(probe, weights_only=False)  # the payload is live: it runs under a pickle reader
    assert marker.exists()
    marker.unlink()
    probe.rename(path)


def test_the_format_round_trips_tensors_and_json(tmp_path):
    weights = torch.arange(6.0).reshape(2, 3)
    tensors = {"a": weights, "view": weights[0], "tied": weights}  # shared memory is written as copies
    tensorfile.save(tmp_path / "x.safetensors", tensors, {"names": ["a", "b"], "size": 64})
    back, meta = tensorfile.load(tmp_path / "x.safetensors")
    assert meta == {"names": ["a", "b"], "size": 64}
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CorruptFile, match="empty.safetensors: empty; lmbench reads only"):
        tensorfile.load(tmp_path / "empty.safetensors")


def test_a_planted_model_file_is_refused_in_one_line_and_runs_nothing(tmp_path):
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(1,), extra="save_models = true"))
    assert run_matrix(matrix, quiet=True).ok == 1
    (run,) = results.read_runs([matrix.results_dir])
    load_detector(run)  # the file it wrote reads back
    marker = tmp_path / "ran"
    plant(model_file(run), marker)
    images = tmp_path / "images"
    images.mkdir()
    shown = lmbench_cli("predict", str(matrix.results_dir), "--images", str(images), "--run", run["run_key"])
    assert shown.returncode == 2 and not marker.exists()
    assert shown.stdout.startswith("error: ") and shown.stdout.count("\n") == 1, shown.stdout  # one line
    line = shown.stdout
    assert f"{model_file(run).name}: a torch.save archive (a pickle, which can run code when read)" in line
    assert "set aside" in line and f"lmbench run trains run {run['run_key']} again" in line
    assert not model_file(run).exists() and results.read_runs([matrix.results_dir]) == []  # pending again
    (set_aside,) = (matrix.results_dir / "corrupt" / "models").iterdir()
    old = model_file(run).with_suffix(".pt")  # a model saved by an older lmbench
    set_aside.rename(old)
    with pytest.raises(LmbenchError, match=r"\.pt: an older lmbench's model file, a pickle"):
        load_detector(run)
    assert not marker.exists()


def test_planted_cache_files_are_never_read_and_are_computed_again(tmp_path, caplog):
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(1,), pretrainers=(
        '[[pretrainers]]\nname = "simclrv2"\nparams = { iterations = 2, batch_size = 4 }')))
    assert run_matrix(matrix, quiet=True).ok == 1
    (data,) = (tmp_path / "cache" / "data").glob("*.safetensors")
    (weights,) = (tmp_path / "cache" / "pretrain").glob("*/checkpoint-2.safetensors")
    marker = tmp_path / "ran"
    for path in (data, weights):
        plant(path, marker)
    with caplog.at_level(logging.WARNING, logger="lmbench"):
        summary = run_matrix(matrix, rerun="all", quiet=True)
    assert summary.ok == 1 and not marker.exists()
    warned = [r.getMessage() for r in caplog.records]
    assert any(str(data) in m and "a torch.save archive" in m and "set aside" in m for m in warned)
    assert any(str(weights) in m and "pre-training again" in m for m in warned)
    (run,) = results.read_runs([matrix.results_dir])
    assert run["pretrain_cache_hit"] is False
    tensorfile.load(data), tensorfile.load(weights)  # both written again in the safe format

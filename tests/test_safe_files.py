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


def test_a_table_without_its_digest_is_foreign_and_set_aside(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conftest import fake_run_row

    results.write_run(tmp_path, fake_run_row("k" * 16, "scratch", 1, 0), [], [])
    path = tmp_path / "runs" / f"{'k' * 16}.parquet"
    table = pq.read_table(path)
    edited = table.set_column(table.column_names.index("labels"), "labels", pa.array([50], pa.int64()))
    pq.write_table(edited.replace_schema_metadata({}), path)  # an edit, its digest dropped
    with pytest.raises(CorruptFile, match="carries no checksum"):
        results.read_verified(path, results.RUN_SCHEMA)
    assert results.read_runs([tmp_path]) == [] and not path.exists()  # set aside: the run is pending again
    assert list((tmp_path / "corrupt").rglob("*.parquet*"))


def test_a_table_of_another_kind_or_another_run_is_set_aside_and_the_rest_still_reads(tmp_path):
    import shutil

    from conftest import fake_run_row

    metric = [{"split": "test", "eval_mode": "x", "metric": "mre", "landmark": "all", "value": 1.0, "unit": "mm"}]
    for key, seed in (("a" * 16, 0), ("b" * 16, 1), ("c" * 16, 2)):
        results.write_run(tmp_path, fake_run_row(key, "scratch", 1, seed), metric, [])
    # a metrics table with valid checksums where a run row belongs, and another run's metrics
    shutil.copyfile(tmp_path / "metrics" / f"{'a' * 16}.parquet", tmp_path / "runs" / f"{'a' * 16}.parquet")
    shutil.copyfile(tmp_path / "metrics" / f"{'c' * 16}.parquet", tmp_path / "metrics" / f"{'b' * 16}.parquet")
    with pytest.raises(CorruptFile, match="not this folder's kind of table"):
        results.read_verified(tmp_path / "runs" / f"{'a' * 16}.parquet", results.RUN_SCHEMA)
    assert [row["run_key"] for row in results.read_runs([tmp_path])] == ["c" * 16]
    assert results.statuses(tmp_path) == {"c" * 16: "ok"}  # the two others are pending again
    assert len(list((tmp_path / "corrupt").rglob("*.parquet*"))) == 3


def test_tensor_files_without_a_digest_or_with_edited_metadata_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "detector.safetensors"
    tensorfile.save(path, {"w": torch.ones(3)}, {"image_size": 64})
    assert tensorfile.load(path)[1] == {"image_size": 64}
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"lmbench": '{"image_size": 128}',
                                            "sha256": tensorfile.checksum(tensors)})  # the old, tensors-only digest
    with pytest.raises(CorruptFile, match="do not match the checksum"):
        tensorfile.load(path)
    save_file(tensors, str(path), metadata={"lmbench": '{"image_size": 64}'})
    with pytest.raises(CorruptFile, match="carries no checksum"):
        tensorfile.load(path)


def test_planted_links_are_never_written_through(tmp_path):
    from lmbench.store import integrity, layout

    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    log = layout.log_file(tmp_path / "results", "k" * 16)
    log.parent.mkdir(parents=True)
    log.symlink_to(target)
    integrity.write_text(log, "a traceback")
    assert target.read_text() == "keep me" and not log.is_symlink() and log.read_text() == "a traceback"
    temporary = log.with_name(f".{log.name}.{__import__('os').getpid()}.tmp")
    temporary.symlink_to(target)  # even at the name the writer is about to use
    integrity.write_text(log, "again")
    assert target.read_text() == "keep me" and log.read_text() == "again"


def test_a_planted_claim_link_fails_those_runs_in_one_line_and_creates_nothing(tmp_path):
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(1,), epochs=1))
    (spec,) = matrix.runs
    target = tmp_path / "created-through-the-link"
    claim = matrix.results_dir / "claims" / f"{spec.training_key}.lock"
    claim.parent.mkdir(parents=True)
    claim.symlink_to(target)
    summary = run_matrix(matrix, quiet=True)
    assert summary.failed == 1 and not target.exists()
    assert "a symbolic link where lmbench keeps a lock" in summary.failures[0][1]


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "."])
def test_a_matrix_name_is_one_folder_name(tmp_path, name):
    from lmbench.core.errors import MatrixError

    path = tiny_matrix(tmp_path)
    path.write_text(path.read_text().replace('name = "tiny"', f'name = "{name}"', 1))
    with pytest.raises(MatrixError, match="is not a folder name"):
        load_matrix(path)


def test_a_full_disk_under_results_fails_those_runs_in_one_line_and_the_matrix_goes_on(tmp_path, monkeypatch):
    import errno

    import pyarrow.parquet as pq

    matrix = load_matrix(tiny_matrix(tmp_path, epochs=1))
    original = pq.write_table

    def full(table, where, **kwargs):
        if "metrics" in str(where):
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return original(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", full)
    summary = run_matrix(matrix, quiet=True)
    assert (summary.ok, summary.failed) == (0, 2)
    assert all("results could not be written (OSError: [Errno 28] No space left on device" in error
               and "\n" not in error for _, error in summary.failures)
    assert results.statuses(matrix.results_dir) == {}  # nothing recorded: both pending
    assert not [p for p in matrix.results_dir.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(pq, "write_table", original)
    assert run_matrix(matrix, quiet=True).ok == 2

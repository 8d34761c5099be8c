import threading
import time
import tomllib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lmbench.config.matrix import load_matrix, parse_matrix
from lmbench.config.specs import ComponentSpec
from lmbench.core.errors import SkipRun
from lmbench.data import decoded
from lmbench.reporting.leaderboard import build_boards
from lmbench.run.context import pick_device
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench_plugins.synthetic.dataset import SyntheticHands

from conftest import ROOT, tiny_matrix


def metric_values(results_dir):
    return {
        (row["run_key"], row["split"], row["metric"], row["landmark"]): row["value"]
        for path in sorted((results_dir / "metrics").glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
        if row["eval_mode"] == "native"
    }


def test_a_matrix_runs_end_to_end_and_a_rerun_recomputes_nothing(tmp_path):
    m = load_matrix(tiny_matrix(tmp_path))
    summary = run_matrix(m, quiet=True)
    assert (summary.ok, summary.failed, summary.already_done) == (2, 0, 0)

    runs = results.read_runs([m.results_dir])
    assert {r["status"] for r in runs} == {"ok"}
    run = runs[0]
    assert run["unit"] == "mm" and run["device"] == str(pick_device()) and run["n_parameters"] > 0
    assert run["epochs"] == 2 and 1 <= run["best_epoch"] <= 2
    assert results.read_table("predictions", run["_file"]).num_rows == (4 + 6) * 11  # val + test images x landmarks
    metrics = results.read_table("metrics", run["_file"]).to_pylist()
    assert {m_["metric"] for m_ in metrics} == {"mre", "mre_std", "sdr@2.5", "sdr@5", "sdr@10", "failure@10", "coverage",
                                                 "radius", "coverage_adaptive", "radius_adaptive"}
    for split in ("val", "test"):  # each split's metrics are its own predictions'
        errors = results.read_table("predictions", run["_file"], split=split).column("error").to_pylist()
        mre = next(r["value"] for r in metrics
                   if r["split"] == split and r["eval_mode"] == "native" and r["metric"] == "mre" and r["landmark"] == "all")
        assert mre == pytest.approx(sum(errors) / len(errors))

    before = {p: p.stat().st_mtime_ns for p in m.results_dir.rglob("*.parquet")}
    again = run_matrix(m, quiet=True)
    assert (again.ok, again.already_done) == (0, 2)
    assert {p: p.stat().st_mtime_ns for p in m.results_dir.rglob("*.parquet")} == before

    values = metric_values(m.results_dir)
    forced = run_matrix(m, rerun="all", quiet=True)
    assert forced.ok == 2
    assert metric_values(m.results_dir) == values  # same seed, same numbers


def test_a_failing_run_is_recorded_and_the_matrix_goes_on(tmp_path):
    m = load_matrix(tiny_matrix(tmp_path, labels=(1, 50)))
    summary = run_matrix(m, quiet=True)
    assert (summary.ok, summary.failed) == (1, 1)
    failed = [r for r in results.read_runs([m.results_dir]) if r["status"] == "failed"]
    assert failed[0]["error"] == "labels = 50 exceeds the 12 images of the training split"
    assert not (m.results_dir / "metrics" / f"{failed[0]['run_key']}.parquet").exists()
    assert (m.results_dir / "logs" / f"{failed[0]['run_key']}.log").read_text().startswith("Traceback")

    assert run_matrix(m, quiet=True).already_done == 2
    retried = run_matrix(m, rerun="failed", quiet=True)
    assert (retried.failed, retried.already_done) == (1, 1)

    board = build_boards([m.results_dir])[0]
    assert board.not_ok == {"failed": 1} and [row.labels for row in board.rows] == [1]


def test_a_plugin_that_cannot_run_here_is_recorded_as_skipped(tmp_path, monkeypatch):
    from lmbench_plugins.scratch.pretrainer import Scratch

    def unavailable(self, context):
        raise SkipRun("weights are not available offline; pass a file path")

    monkeypatch.setattr(Scratch, "pretrain", unavailable)
    m = load_matrix(tiny_matrix(tmp_path, labels=(1,)))
    summary = run_matrix(m, quiet=True)
    assert summary.skipped == 1
    (run,) = results.read_runs([m.results_dir])
    assert (run["status"], run["error"]) == ("skipped", "weights are not available offline; pass a file path")


def test_partial_files_left_by_a_crash_are_never_read(tmp_path):
    m = load_matrix(tiny_matrix(tmp_path, labels=(1,)))
    run_matrix(m, quiet=True)
    junk = m.results_dir / "runs" / ".abc.parquet.123.tmp"
    junk.write_bytes(b"PAR1 truncated")
    assert len(results.read_runs([m.results_dir])) == 1
    assert run_matrix(m, quiet=True).already_done == 1


def test_leaderboard_aggregates_seeds_and_marks_the_best(tmp_path):
    m = load_matrix(tiny_matrix(tmp_path, seeds=(0, 1), labels=(1, 2)))
    run_matrix(m, quiet=True)
    (board,) = build_boards([m.results_dir, m.results_dir])  # the same runs twice count once
    assert board.unit == "mm" and board.metrics == ["mre", "sdr@2.5", "sdr@5", "sdr@10"]
    assert [(row.labels, row.seeds) for row in board.rows] == [(1, 2), (2, 2)]
    values = metric_values(m.results_dir)
    (validation,) = build_boards([m.results_dir], split="val")
    assert "validation set" in validation.title()
    for split, rows in (("test", board.rows), ("val", validation.rows)):
        for row in rows:
            keys = [r.run_key for r in m.runs if r.labels == row.labels]
            mres = [values[(k, split, "mre", "all")] for k in keys]
            assert row.values["mre"][0] == pytest.approx(sum(mres) / 2)
            assert row.values["mre"][1] == pytest.approx(abs(mres[0] - mres[1]) / 2)
    for row in board.rows:
        assert board.best(row.labels, "mre") == row.values["mre"][0]  # one method: it is the best


def test_the_default_matrix_runs_end_to_end_in_small(tmp_path):
    """benchmarks.toml itself, shrunk: fewer epochs, images, label counts and pre-training steps."""
    path = ROOT / "benchmarks.toml"
    data = tomllib.loads(path.read_text())
    data.update(output=str(tmp_path), cache_dir=str(tmp_path / "cache"), labels=[1], seeds=[0])  # every row once
    data["finetune"] = {**data.get("finetune", {}), "epochs": 2, "samples_per_epoch": 8}
    for dataset in data["datasets"]:
        dataset["params"] = {**dataset.get("params", {}), "n_train": 10, "n_val": 4, "n_test": 6}
    for pretrainer in data["pretrainers"]:
        if pretrainer["name"] in ("ddpm", "mocov3", "simclrv2", "dino"):
            pretrainer["params"] = {**pretrainer.get("params", {}), "iterations": 3}
    m = parse_matrix(data, path)
    summary = run_matrix(m, quiet=True)
    assert summary.failed == 0 and summary.ok == len(m.runs) > 0
    boards = build_boards([tmp_path])
    assert boards and all(row.values["mre"][0] > 0 for board in boards for row in board.rows)


def test_pretraining_on_another_datasets_images(tmp_path, monkeypatch):
    from dataclasses import dataclass

    from lmbench.core.interfaces import Pretrainer
    from lmbench.core.plugins import Registration, registry

    pools = []  # how many unlabeled images each pre-training saw

    class Recording(Pretrainer):
        produces = "detector"

        @dataclass
        class Params:
            pass

        def pretrain(self, context):
            pools.append(context.images.shape[0])
            return context.backbone.build(context.num_landmarks, context.images.shape[-1]).state_dict()

    reg = registry()
    monkeypatch.setitem(reg.components, ("pretrainer", "recording"), Registration("pretrainer", "recording", Recording, reg.plugins[0]))
    pool = '{ name = "synthetic", params = { seed = 7, n_train = 9, n_val = 3, n_test = 2, height = 100, width = 80 } }'
    m = load_matrix(tiny_matrix(
        tmp_path, labels=(1, 2),
        pretrainers=f'[[pretrainers]]\nname = "recording"\nlabel = "own"\n\n'
                    f'[[pretrainers]]\nname = "recording"\nlabel = "other"\ndataset = {pool}',
    ))
    own, other = (next(r for r in m.runs if r.pretrainer.label == lab) for lab in ("own", "other"))
    assert own.pretrain_key != other.pretrain_key
    assert other.pretrain_identity()["dataset"]["params"]["seed"] == 7
    assert run_matrix(m, quiet=True).ok == 4
    assert sorted(pools) == [9 + 3, 12 + 4]  # one pre-training each: train + val images


def test_an_empty_split_fails_the_run_with_its_name(tmp_path, monkeypatch):
    m = load_matrix(tiny_matrix(tmp_path, labels=(1,), extra=""))
    split = SyntheticHands.split  # a dataset whose files left no test image
    monkeypatch.setattr(SyntheticHands, "split", lambda self, name: [] if name == "test" else split(self, name))
    summary = run_matrix(m, quiet=True)
    assert summary.failures[0][1].startswith("dataset synthetic: the test split is empty [run ")


def test_runs_under_one_name_with_other_settings_are_never_pooled(tmp_path):
    for epochs in (1, 2):
        run_matrix(load_matrix(tiny_matrix(tmp_path, labels=(1,), epochs=epochs)), quiet=True)
    (board,) = build_boards([tmp_path / "results"])
    names = sorted(row.method[0] for row in board.rows)
    assert len(names) == 2 and all(n.startswith("scratch [") for n in names) and names[0] != names[1]
    assert all(row.seeds == 1 for row in board.rows)


def test_the_same_configuration_and_seed_counts_once(tmp_path):
    m = load_matrix(tiny_matrix(tmp_path, labels=(1,)))
    run_matrix(m, quiet=True)
    (path,) = (m.results_dir / "runs").glob("*.parquet")
    copy = tmp_path / "copy" / "runs" / "other.parquet"  # the same run under another key
    copy.parent.mkdir(parents=True)
    table = pq.read_table(path)
    pq.write_table(table.set_column(1, "run_key", pa.array(["other"])), copy)
    (copy.parent.parent / "metrics").mkdir()
    pq.write_table(pq.read_table(m.results_dir / "metrics" / path.name), copy.parent.parent / "metrics" / "other.parquet")
    (board,) = build_boards([m.results_dir, tmp_path / "copy"])
    assert [row.seeds for row in board.rows] == [1]


def test_parallel_workers_decode_a_dataset_once_and_share_its_file(tmp_path, monkeypatch):
    decodes = []

    def slow_prepare(*args, **kwargs):
        decodes.append(threading.get_ident())
        time.sleep(0.5)  # long enough for the other worker to reach the cache meanwhile
        return prepare(*args, **kwargs)

    prepare = decoded.prepare
    monkeypatch.setattr(decoded, "prepare", slow_prepare)
    spec = ComponentSpec("dataset", "synthetic", "synthetic", {"n_train": 6, "n_val": 2, "n_test": 2}, {})
    start, got = threading.Barrier(2), []

    def worker():  # each with its own cache object, as two processes have
        start.wait()
        got.append(decoded.DataCache(tmp_path).get(spec, 32)[1].images)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(decodes) == 1 and len(got) == 2 and torch.equal(got[0], got[1])

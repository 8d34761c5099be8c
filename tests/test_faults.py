"""Faults a long job meets, each survived: kills at every stage, a corrupted cache, a
diverging loss, running out of GPU memory. Nothing finished is lost or computed twice."""

import logging
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import torch

from lmbench.config.matrix import load_matrix
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench.train import engine
from lmbench_plugins.gaussian.head import GaussianHead

from conftest import ROOT, lmbench_cli, tiny_matrix

DDPM = '[[pretrainers]]\nname = "ddpm"\nparams = {{ iterations = {n}, sweep = [{first}], batch_size = 2 }}\n'
DDPM_BACKBONE = ('name = "smp-unet"\nparams = { encoder = "tu-resnet10t", encoder_depth = 3, decoder_channels = [32, 16, 8] }',
                 'name = "ddpm-unet"')


def ddpm_matrix(folder, iterations=60, first=2, labels=(1, 2)):
    folder.mkdir(exist_ok=True)
    path = tiny_matrix(folder, labels=labels, pretrainers=DDPM.format(n=iterations, first=first))
    path.write_text(path.read_text().replace(*DDPM_BACKBONE))
    return path


def metric_values(results_dir):
    return {(row["run_key"], row["split"], row["eval_mode"], row["metric"], row["landmark"]): row["value"]
            for path in (results_dir / "metrics").glob("*.parquet") for row in pq.read_table(path).to_pylist()}


def test_killed_during_pretraining_then_rerun_matches_a_clean_run(tmp_path):
    path = ddpm_matrix(tmp_path / "killed", iterations=20)
    cache = tmp_path / "killed" / "cache" / "pretrain"
    process = subprocess.Popen([sys.executable, "-m", "lmbench", "run", "--matrix", str(path), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(cache.glob("*/checkpoint-2.safetensors")):
        time.sleep(0.02)
    process.kill()
    process.wait()
    assert list(cache.glob("*/checkpoint-2.safetensors")) and not list(cache.glob("*/COMPLETE")), "killed mid pre-training"
    out = lmbench_cli("run", "--matrix", str(path), "--quiet")
    assert out.returncode == 0 and "2 ok" in out.stdout, out.stdout + out.stderr

    clean = load_matrix(ddpm_matrix(tmp_path / "clean", iterations=20))
    run_matrix(clean, quiet=True)
    assert metric_values(tmp_path / "killed" / "results" / "tiny") == metric_values(clean.results_dir)


KILL_ON_SECOND_RUN_ROW = """
import os, signal, sys
from lmbench.store import results
original = results.write_atomic
written = []
def dying(table, path):
    if path.parent.name == "runs" and written:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(b"PAR1 half a file")  # what a kill mid-write leaves
        os.kill(os.getpid(), signal.SIGKILL)
    original(table, path)
    if path.parent.name == "runs":
        written.append(path)
results.write_atomic = dying
from lmbench.cli import main
sys.argv = ["lmbench", "run", "--matrix", sys.argv[1], "--quiet"]
main()
"""


def test_killed_during_a_result_write_then_rerun_completes_once(tmp_path):
    path = tiny_matrix(tmp_path, labels=(1, 2, 3))
    killed = subprocess.run([sys.executable, "-c", KILL_ON_SECOND_RUN_ROW, str(path)], capture_output=True, cwd=ROOT)
    assert killed.returncode == -9
    runs = tmp_path / "results" / "tiny" / "runs"
    assert len(list(runs.glob("*.parquet"))) == 1 and list(runs.glob(".*.tmp"))
    assert len(results.read_runs([runs.parent])) == 1  # the half file is never read
    out = lmbench_cli("run", "--matrix", str(path), "--quiet")
    assert out.returncode == 0 and "2 ok" in out.stdout and "1 already done" in out.stdout, out.stdout
    assert sorted(r["labels"] for r in results.read_runs([runs.parent])) == [1, 2, 3]


def test_a_corrupted_cached_checkpoint_is_detected_and_rebuilt(tmp_path, caplog):
    matrix = load_matrix(ddpm_matrix(tmp_path, iterations=4, labels=(1,)))
    run_matrix(matrix, quiet=True)
    before = metric_values(matrix.results_dir)
    (weights,) = (tmp_path / "cache" / "pretrain").glob("*/checkpoint-4.safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger="lmbench"):
        summary = run_matrix(matrix, rerun="all", quiet=True)
    assert summary.ok == 1
    assert any(str(weights) in r.message and "pre-training again" in r.message for r in caplog.records)
    assert list((tmp_path / "cache" / "corrupt").rglob("checkpoint-4.safetensors.*"))  # set aside, not deleted
    (run,) = results.read_runs([matrix.results_dir])
    assert run["pretrain_cache_hit"] is False
    assert metric_values(matrix.results_dir) == before  # rebuilt to the same weights


def test_a_diverging_loss_fails_fast_with_its_reason_and_the_matrix_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(GaussianHead, "loss", lambda self, logits, targets: logits.sum() * float("nan"))
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(1,), extra='[[heads]]\nname = "contour-hugging"\n'))
    summary = run_matrix(matrix, quiet=True)
    assert (summary.failed, summary.ok) == (1, 1)  # the contour-hugging run still finished
    (title, error), = summary.failures
    (run,) = [r for r in matrix.runs if r.head.name == "gaussian"]
    log = matrix.results_dir / "logs" / f"{run.run_key}.log"
    assert "| gaussian |" in title
    assert error == f"training loss became nan at epoch 1, step 1 [run {run.run_key}, fine-tuning; log {log}]"
    assert "Traceback" in log.read_text()


def test_out_of_gpu_memory_names_the_batch_size_and_profile(tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine, "finetune", oom)
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(1,)))
    summary = run_matrix(matrix, quiet=True)
    (_, error), = summary.failures
    assert error.startswith("out of GPU memory in profile 'smoke' at 32 px") and "batch_size (4;" in error


def test_a_training_pretrainer_that_returns_nothing_fails_naming_its_cache(tmp_path, monkeypatch):
    from lmbench.core.interfaces import Pretrainer
    from lmbench.core.plugins import Plugin, Registration, registry

    class Forgetful(Pretrainer):
        produces = "detector"

        def pretrain(self, context):
            context.backbone.build(context.num_landmarks, context.images.shape[-1])  # ... and no return

    monkeypatch.setitem(registry().components, ("pretrainer", "forgetful"),
                        Registration("pretrainer", "forgetful", Forgetful, Plugin("forgetful", "tests", "0")))
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(1,), pretrainers='[[pretrainers]]\nname = "forgetful"'))
    summary = run_matrix(matrix, quiet=True)
    (_, error), = summary.failures
    run = matrix.runs[0]
    assert error == (
        "pretrainer 'forgetful' returned nothing from pretrain(): a training pretrainer must return its weights as "
        f"a state dict (name -> tensor) [run {run.run_key}, pre-training, cache {matrix.cache_dir}/pretrain/"
        f"{run.pretrain_key}; log {matrix.results_dir}/logs/{run.run_key}.log]")
    assert not (matrix.cache_dir / "pretrain" / run.pretrain_key / "COMPLETE").exists()


def test_status_counts_finished_failed_running_and_pending(tmp_path):
    from lmbench.run.jobs import GroupJob
    from lmbench.store.locks import file_lock

    path = tiny_matrix(tmp_path, labels=(1, 2, 3))
    matrix = load_matrix(path)
    GroupJob(matrix.results_dir, matrix.cache_dir)([matrix.runs[0]])  # one finished
    with file_lock(matrix.results_dir / "claims" / f"{matrix.runs[1].training_key}.lock"):
        out = subprocess.run([sys.executable, "-m", "lmbench", "status", "--matrix", str(path)],
                             capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert "3 runs: 1 finished, 0 failed, 0 skipped, 1 running, 1 pending" in out.stdout, out.stdout + out.stderr
    assert "min of run time left (2 runs at the finished runs' mean of" in out.stdout

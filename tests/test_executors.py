"""One smoke matrix through local, pool and submitit executors gives identical results, and
processes sharing a matrix or a pre-training never do the same work twice."""

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from lmbench.config.matrix import load_matrix
from lmbench.run.schedule import run_matrix
from lmbench.store import results

from conftest import lmbench_cli, tiny_matrix

DDPM = '[[pretrainers]]\nname = "ddpm"\nparams = { iterations = 4, batch_size = 2 }\n'
DDPM_BACKBONE = ('name = "smp-unet"\nparams = { encoder = "tu-resnet10t", encoder_depth = 3, decoder_channels = [32, 16, 8] }',
                 'name = "ddpm-unet"')


def metric_values(results_dir):
    return {(row["run_key"], row["split"], row["eval_mode"], row["metric"], row["landmark"]): row["value"]
            for path in (results_dir / "metrics").glob("*.parquet") for row in pq.read_table(path).to_pylist()}


def smoke(folder, executor=""):
    folder.mkdir()
    path = tiny_matrix(folder, labels=(1, 2), seeds=(0, 1), extra=executor)
    return path


def test_local_pool_and_submitit_give_identical_results(tmp_path):
    local = load_matrix(smoke(tmp_path / "local"))
    assert run_matrix(local, quiet=True).ok == 4
    pool = smoke(tmp_path / "pool", '[executor]\nkind = "pool"\nworkers = 2\n')
    out = lmbench_cli("run", "--matrix", str(pool), "--quiet")
    assert out.returncode == 0 and "4 ok" in out.stdout, out.stdout + out.stderr

    jobs = tmp_path / "jobs"
    slurm = load_matrix(smoke(tmp_path / "slurm", f'[executor]\nkind = "submitit"\ncluster = "local"\nfolder = "{jobs}"\ngpus = 0\ncpus = 1\n'))
    assert run_matrix(slurm, quiet=True).ok == 4
    assert list(jobs.glob("*/*_submitted.pkl")), "the runs went through submitit's job files"

    expected = metric_values(local.results_dir)
    assert len(expected) > 0
    assert metric_values(tmp_path / "pool" / "results" / "tiny") == expected  # bit for bit: one thread count
    assert metric_values(slurm.results_dir) == expected
    rerun = run_matrix(slurm, quiet=True)  # a restarted coordinator submits nothing finished
    assert (rerun.ok, rerun.already_done) == (0, 4)


def test_the_executor_can_be_chosen_on_the_command_line(tmp_path):
    path = smoke(tmp_path / "m")
    out = lmbench_cli("run", "--matrix", str(path), "--quiet", "--executor", "pool")
    assert out.returncode == 0 and "4 ok" in out.stdout, out.stdout + out.stderr
    out = lmbench_cli("run", "--matrix", str(path), "--quiet", "--executor", "slurmm")
    assert out.returncode != 0 and "unknown executor 'slurmm'" in out.stdout + out.stderr


def test_two_processes_on_one_matrix_never_duplicate_work(tmp_path):
    path = tiny_matrix(tmp_path, labels=(1, 2, 3), seeds=(0, 1), pretrainers=DDPM)
    path.write_text(path.read_text().replace(*DDPM_BACKBONE))
    command = [sys.executable, "-m", "lmbench", "run", "--matrix", str(path), "--quiet"]
    first, second = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2))
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert all(p.returncode == 0 for p in (first, second)), outputs
    done = [int(o.split(" ok,")[0].split()[-1]) for o in outputs]
    assert sum(done) == 6, outputs  # each run computed by exactly one of them
    runs = results.read_runs([tmp_path / "results"])
    assert len(runs) == 6 and all(r["status"] == "ok" for r in runs)
    assert sum(not r["pretrain_cache_hit"] for r in runs) == 1  # one pre-training for both processes


def test_an_unknown_executor_in_the_matrix_is_named(tmp_path):
    from lmbench.core.errors import MatrixError

    with pytest.raises(MatrixError, match=r"executor\.name: unknown executor 'cluster'"):
        load_matrix(tiny_matrix(tmp_path, extra='[executor]\nkind = "cluster"\n'))


def test_a_slurm_task_stopped_by_its_time_limit_submits_itself_again():
    """submitit calls ``checkpoint`` when SLURM stops a task (time limit, preemption) and
    requeues what it returns; the group's pre-training then resumes from its resume state."""
    from lmbench_plugins.executors.slurm import Requeued

    groups = []
    task = Requeued(lambda group: groups.append(group) or "summary")
    again = task.checkpoint(["group"])
    assert again.function is task and again.args == (["group"],)
    assert again.function(*again.args) == "summary" and groups == [["group"]]


def test_a_job_on_several_nodes_asks_slurm_for_them_and_runs_its_group_on_the_first(tmp_path, monkeypatch):
    """``nodes = M``: one task per node, each with ``--nproc`` GPUs; the first node runs the
    group (its pre-trainings over every node: ``distributed.launch_command``), the others
    return at once. Without SLURM the setting is refused in one line."""
    import submitit

    from lmbench_plugins.executors.slurm import Requeued, Submitit

    path = smoke(tmp_path / "local", '[executor]\nkind = "submitit"\ncluster = "local"\nnodes = 2\ngpus = 0\n')
    out = lmbench_cli("run", "--matrix", str(path), "--quiet")
    assert out.returncode != 0 and "several nodes (nodes = 2) only on SLURM, not on 'local'" in out.stdout + out.stderr

    bin_dir = tmp_path / "bin"  # submitit looks for srun before it writes a job
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    executor = Submitit(Submitit.Params(cluster="slurm", nodes=2, folder=str(tmp_path / "jobs"))).executor(nproc=4)
    script = executor._executor._make_submission_file_text("python -m job", "uid")
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4"} <= set(script.splitlines())

    ran = []
    task = Requeued(ran.append, nodes=2)
    for rank in (1, 0):
        monkeypatch.setattr(submitit, "JobEnvironment", lambda rank=rank: type("Env", (), {"global_rank": rank}))
        task(["group"])
    assert ran == [["group"]]


def test_the_pool_hands_out_every_pretraining_once_before_any_twice():
    from pathlib import Path

    from lmbench_plugins.executors.pool import spread_pretrainings

    matrix = load_matrix(Path(__file__).parents[1] / "benchmarks.toml")
    groups = [[spec] for spec in matrix.runs]
    spread = spread_pretrainings(groups)
    keys = [group[0].pretrain_key for group in spread]
    distinct = len(set(keys))
    assert sorted(map(id, spread)) == sorted(map(id, groups))
    assert len(set(keys[:distinct])) == distinct < len(keys)  # the default matrix shares its pre-trainings
    assert [g for g in spread if g[0].pretrain_key == keys[0]] == [g for g in groups if g[0].pretrain_key == keys[0]]

"""A matrix killed mid-way and run again ends exactly where an uninterrupted run ends."""

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

from lmbench.config.matrix import load_matrix
from lmbench.run.schedule import run_matrix

from conftest import lmbench_cli, tiny_matrix


def metrics(results_dir):
    return {
        (row["run_key"], row["metric"], row["landmark"]): row["value"]
        for path in (results_dir / "metrics").glob("*.parquet")
        for row in pq.read_table(path).to_pylist()
    }


def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path):
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    killed_dir.mkdir()
    clean_dir.mkdir()
    matrix = tiny_matrix(killed_dir, labels=(1, 2, 3, 4), seeds=(0, 1), epochs=3)
    runs_dir = killed_dir / "results" / "tiny" / "runs"

    process = subprocess.Popen(
        [sys.executable, "-m", "lmbench", "run", "--matrix", str(matrix), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list(runs_dir.glob("*.parquet"))) < 2:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p: p.stat().st_mtime_ns for p in runs_dir.glob("*.parquet")}
    assert 2 <= len(finished) < 8, "the kill should land mid-matrix"

    out = lmbench_cli("run", "--matrix", str(matrix), "--quiet")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(finished)} already done" in out.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not recomputed
    assert len(list(runs_dir.glob("*.parquet"))) == 8

    clean = load_matrix(tiny_matrix(clean_dir, labels=(1, 2, 3, 4), seeds=(0, 1), epochs=3))
    run_matrix(clean, quiet=True)
    assert metrics(killed_dir / "results" / "tiny") == metrics(clean.results_dir)


def children_of(pid):
    """Pids of the processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if entry.isdigit() and int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except OSError:
            pass
    return found


def test_sigterm_stops_every_worker_says_what_was_kept_and_a_rerun_goes_on(tmp_path):
    matrix = tiny_matrix(tmp_path, labels=(1, 2, 3, 4), seeds=(0, 1), epochs=3)
    runs_dir = tmp_path / "results" / "tiny" / "runs"
    process = subprocess.Popen(
        [sys.executable, "-m", "lmbench", "run", "--matrix", str(matrix), "--quiet", "--executor", "pool"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "300"},
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs_dir.glob("*.parquet")):
        time.sleep(0.05)
    workers = [pid for pid in children_of(process.pid) if "lmbench" in open(f"/proc/{pid}/cmdline").read()
               or "multiprocessing" in open(f"/proc/{pid}/cmdline").read()]
    assert workers, "the pool's workers should be running"
    os.kill(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 143, output
    kept = len(list(runs_dir.glob("*.parquet")))
    assert f"error: stopped by SIGTERM: {kept} of the 8 runs to do finished and are kept in" in output, output
    assert "Traceback" not in output
    time.sleep(1)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"]
    out = lmbench_cli("run", "--matrix", str(matrix), "--quiet")
    assert out.returncode == 0 and f"{kept} already done" in out.stdout, out.stdout + out.stderr

"""The benchmark scripts run, in their tiny modes, so that they cannot rot before a GPU is lent."""

import subprocess
import sys

from conftest import ROOT


def test_the_gpu_check_prints_its_table_and_a_shortened_row_that_trained(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={"COLUMNS": "200", **__import__("os").environ})
    assert done.returncode == 0, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "lmbench GPU check on CPU" in out and "tiny mode" in out
    assert "ddpm pre-train, smoke, as published (fp32, checkpointing, saves) │ 2x2" in out and "│ 1.00x │" in out
    assert "ddpm pre-train, smoke, fast path │ 4" in out
    assert "pre-training SHORTENED to 4 of 8000 iterations: ok, test MRE" in out and "min per 1,000 pre-training" in out

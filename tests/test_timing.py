"""Where a run's time goes: nested stages exclude the stages inside them, and a run row's
stages add up to its wall time."""

import json
import time

import pytest

from lmbench.config.matrix import load_matrix
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench.train import timing

from conftest import tiny_matrix


def test_a_stage_excludes_the_stages_inside_it():
    start = time.perf_counter()
    with timing.recording() as seconds:
        with timing.stage("outer"):
            time.sleep(0.02)
            with timing.stage("inner"):
                time.sleep(0.03)
            with timing.stage("inner"):
                time.sleep(0.01)
    total = time.perf_counter() - start
    assert seconds["inner"] >= 0.04 and seconds["outer"] >= 0.02
    assert abs(seconds["outer"] + seconds["inner"] - total) < 0.01
    with timing.stage("unrecorded"):  # outside recording: nothing kept
        pass
    assert "unrecorded" not in seconds


def test_a_runs_stages_add_up_to_its_wall_time(tmp_path):
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(1,)))
    run_matrix(matrix, quiet=True)
    (row,) = results.read_runs([matrix.results_dir])
    stages = json.loads(row["stage_seconds"])
    assert {"data", "pre-training", "network", "fine-tuning", "validation", "prediction", "scoring", "other"} <= set(stages)
    assert sum(stages.values()) == pytest.approx(row["wall_time_s"], abs=0.01)  # rounded to 1 ms each
    assert stages["other"] >= 0

"""Which training images get the labels: built-in strategies, their keys and their checks."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import torch

from lmbench.config.matrix import load_matrix, parse_matrix
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench.testing import make

from conftest import tiny_matrix


def clustered_pool(clusters=5, per_cluster=8, size=16, seed=0):
    """Shuffled ids and images: ``clusters`` distinct prototypes, each seen with faint noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((clusters, 1, size, size))
    members = np.repeat(np.arange(clusters), per_cluster)
    rng.shuffle(members)
    images = prototypes[members] + rng.normal(0, 0.01, (len(members), 1, size, size))
    return [f"{i:03d}" for i in range(len(members))], torch.from_numpy(images).float(), members


@pytest.mark.parametrize("method", ["kmedoids", "kcenter"])
def test_representative_picks_one_image_of_each_tight_cluster(method):
    ids, images, members = clustered_pool()
    selector = make("selector", "representative", method=method)
    chosen = selector.select(ids, images, 5, seed=0)
    assert chosen == sorted(chosen) and len(set(chosen)) == 5
    assert sorted(members[ids.index(i)] for i in chosen) == [0, 1, 2, 3, 4]
    assert selector.select(ids, images, 5, seed=0) == chosen  # deterministic for a seed


def test_kmedoids_picks_the_typical_image_and_kcenter_the_outlier_next():
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.normal(0, 0.05, (20, 1, 8, 8))).float()
    images[7] += 5.0  # one image unlike every other
    ids = [str(i) for i in range(20)]
    typical = make("selector", "representative").select(ids, images, 1, seed=0)
    assert typical != ["7"]
    assert "7" in make("selector", "representative", method="kcenter").select(ids, images, 2, seed=0)


def test_first_and_random():
    ids = [f"{i:02d}" for i in range(30)]
    assert make("selector", "first").select(ids, None, 3, seed=0) == ["00", "01", "02"]
    drawn = make("selector", "random").select(ids, None, 5, seed=4)
    assert drawn == sorted(drawn) and len(set(drawn)) == 5
    assert drawn == make("selector", "random").select(ids, None, 5, seed=4)
    assert drawn != make("selector", "random").select(ids, None, 5, seed=5)


def test_selection_params_are_keyed_and_the_paper_default_keeps_its_key(tmp_path):
    path = tiny_matrix(tmp_path)
    data = tomllib.loads(path.read_text())
    first = parse_matrix(data, path).runs[0]
    assert first.run_key == parse_matrix({**data, "selection": {"name": "first"}}, path).runs[0].run_key
    keys = {parse_matrix({**data, "selection": selection}, path).runs[0].run_key for selection in (
        "first", "random", "representative", {"name": "representative", "params": {"method": "kcenter"}})}
    assert len(keys) == 4


def test_every_method_fine_tunes_on_the_chosen_images_recorded_in_its_row(tmp_path):
    pretrainers = '[[pretrainers]]\nname = "scratch"\n\n[[pretrainers]]\nname = "scratch"\nlabel = "again"'
    path = tiny_matrix(tmp_path, labels=(3,), epochs=1, pretrainers=pretrainers,
                       extra='\n[[heads]]\nname = "contour-hugging"')
    path.write_text('selection = { name = "representative", params = { method = "kcenter" } }\n' + path.read_text())
    m = load_matrix(path)
    assert run_matrix(m, quiet=True).ok == 4
    rows = results.read_runs([m.results_dir])
    chosen = {row["labelled_ids"] for row in rows}
    assert len(chosen) == 1 and len(json.loads(chosen.pop())) == 3
    assert {row["selection"] for row in rows} == {"representative"}
    assert all(json.loads(row["selection_params"])["method"] == "kcenter" for row in rows)


def test_a_selector_returning_other_ids_fails_the_run_with_why(tmp_path, monkeypatch):
    from lmbench_plugins.selection import selectors

    monkeypatch.setattr(selectors.First, "select", lambda self, ids, images, count, seed: ids[:1] * count)
    m = load_matrix(tiny_matrix(tmp_path, labels=(2,), epochs=1))
    summary = run_matrix(m, quiet=True)
    assert summary.failed == 1
    assert "selector 'first' returned 1 distinct training ids for labels = 2" in summary.failures[0][1]

"""Bad input gets the project's own one-line error, never a traceback from deep inside:
matrices and annotation files, hand-written cases and generated ones (hypothesis)."""

import tomllib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmbench.config.matrix import load_matrix, parse_matrix
from lmbench.core.errors import DataError, LmbenchError, MatrixError
from lmbench.core.plugins import Registration, registry
from lmbench.data.io import parse_number, read_point_lines
from lmbench.run.schedule import run_matrix
from lmbench_plugins.xray.folder import read_labelme_folder, read_landmark_csv
from lmbench_plugins.xray.hand import read_label_table

from conftest import ROOT, tiny_matrix


def test_more_labels_than_the_training_split_fails_that_run_with_its_reason(tmp_path):
    summary = run_matrix(load_matrix(tiny_matrix(tmp_path, labels=(1, 20))), quiet=True)
    assert (summary.ok, summary.failed) == (1, 1)
    (title, error), = summary.failures
    assert "20 labels" in title and error.startswith("labels = 20 exceeds the 12 images of the training split [run ")
    assert ", loading; log " in error  # the stage it failed in, and where its traceback is


def test_a_missing_data_root_names_the_folder(tmp_path):
    path = tiny_matrix(tmp_path, labels=(1,))
    path.write_text(path.read_text().replace(
        'name = "synthetic"\nparams = { n_train = 12, n_val = 4, n_test = 6, height = 100, width = 80 }',
        f'name = "isbi2015"\nparams = {{ root = "{tmp_path / "no-such-folder"}" }}'))
    summary = run_matrix(load_matrix(path), quiet=True)
    (_, error), = summary.failures
    assert error.startswith(f"{tmp_path / 'no-such-folder'}: isbi2015 data root does not exist [run ")


def test_a_plugin_registering_something_that_is_not_a_component_is_named(tmp_path, monkeypatch):
    reg = registry()
    plugin = next(p for p in reg.plugins if p.name == "synthetic")
    monkeypatch.setitem(reg.components, ("dataset", "junk"), Registration("dataset", "junk", "os.path:join", plugin))
    monkeypatch.setitem(reg.components, ("dataset", "nothing"), Registration("dataset", "nothing", "lmbench_nowhere:X", plugin))
    path = tiny_matrix(tmp_path)
    for name, message in (("junk", r"dataset 'junk' from plugin 'synthetic' is not a Dataset"),
                          ("nothing", r"dataset 'nothing' from plugin 'synthetic' failed to import lmbench_nowhere:X")):
        path.write_text(path.read_text().replace('name = "synthetic"', f'name = "{name}"', 1))
        with pytest.raises(MatrixError, match=message):
            load_matrix(path)
        path = tiny_matrix(tmp_path)


# Matrices built from the default matrix with keys replaced, dropped or added at random.
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 60) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
KEYS = st.sampled_from(["name", "profile", "seeds", "labels", "selection", "image_size", "finetune", "datasets",
                        "pretrainers", "backbones", "heads", "joint", "include", "exclude", "executor", "output", "junk"])
DEFAULT = tomllib.loads((ROOT / "benchmarks.toml").read_text())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(KEYS, VALUES, max_size=3), dropped=st.lists(KEYS, max_size=2))
def test_any_matrix_is_accepted_or_refused_with_a_matrix_error(changes, dropped, tmp_path_factory):
    data = {k: v for k, v in {**DEFAULT, **changes}.items() if k not in dropped and v is not None}
    try:
        parse_matrix(data, tmp_path_factory.getbasetemp() / "generated.toml")
    except LmbenchError as exc:
        assert "\n" not in str(exc) and str(exc)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entry=st.dictionaries(st.sampled_from(["name", "label", "params", "dataset", "extra"]), VALUES, max_size=4))
def test_any_component_entry_is_accepted_or_refused_with_a_matrix_error(entry, tmp_path_factory):
    data = {**DEFAULT, "heads": [entry]}
    try:
        parse_matrix(data, tmp_path_factory.getbasetemp() / "generated.toml")
    except MatrixError as exc:
        assert "\n" not in str(exc)


LINE_TEXT = st.text(alphabet=st.sampled_from(list("0123456789.,-e+ \tnaNinf\n;x")), max_size=200)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=LINE_TEXT, count=st.integers(1, 4), skip=st.integers(0, 1))
def test_any_point_file_is_read_or_refused_with_a_data_error(text, count, skip, tmp_path):
    path = tmp_path / "points.txt"
    path.write_text(text)
    for separator in (",", None):
        try:
            points = read_point_lines(path, count, separator=separator, skip=skip)
        except DataError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
        else:
            assert points.shape == (count, 2) and (points == points).all()  # no NaN gets through


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list("0123456789.,-e abc\n\"")), max_size=300))
def test_any_landmark_table_is_read_or_refused_with_a_data_error(text, tmp_path):
    path = tmp_path / "landmarks.csv"
    path.write_text(text)
    for reader in (lambda p: read_landmark_csv(p).points, read_label_table):
        try:
            table = reader(path)
        except DataError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
        else:
            assert all(v.ndim == 2 and v.shape[1] == 2 and (v == v).all() for v in table.values())
    try:
        found = read_landmark_csv(path)
    except DataError:
        return
    assert found.points or found.problems  # every row is read or has its reason
    assert all(why.startswith(f"{path}: ") and "\n" not in why for why in found.problems.values())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.recursive(st.none() | st.integers() | st.floats() | st.text(max_size=5),
                             lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["shapes", "label", "points", "shape_type", "x"]), c, max_size=3),
                             max_leaves=10))
def test_any_labelme_file_is_read_or_its_problem_named(document, tmp_path):
    import json

    (tmp_path / "a.json").write_text(json.dumps(document))
    found = read_labelme_folder(tmp_path, ["p"])
    if "a" in found.points:
        assert found.points["a"].shape == (1, 2) and np.isfinite(found.points["a"]).all()
    else:
        assert found.problems["a"].startswith(f"{tmp_path / 'a.json'}: ") and "\n" not in found.problems["a"]


@given(text=st.text(max_size=20))
def test_any_number_is_parsed_or_refused_with_a_data_error(text):
    try:
        value = parse_number(text, ROOT / "f.txt", "line 1")
    except DataError as exc:
        assert "f.txt: line 1" in str(exc)
    else:
        assert value == value and abs(value) != float("inf")


@pytest.mark.parametrize("setting, message", [
    ("[finetune]\nlr_scratch = inf", "expected a finite number, got inf"),
    ("[finetune]\nweight_decay = nan", "expected a finite number, got nan"),
    ("seeds = [9223372036854775808]", "does not fit a 64-bit integer"),
])
def test_values_that_could_only_fail_later_are_refused_when_the_matrix_is_read(tmp_path, setting, message):
    import tomllib

    from lmbench.core.errors import MatrixError

    text = tiny_matrix(tmp_path).read_text()
    if setting.startswith("[finetune]"):
        text = text.replace("[finetune]\n", setting + "\n", 1)
    else:
        text = text.replace("seeds = [0]", setting, 1)
    with pytest.raises(MatrixError, match=message):
        parse_matrix(tomllib.loads(text), tmp_path / "m.toml")

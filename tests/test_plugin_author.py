"""What a third-party plugin author meets: every hook public, Path params, a bad default or a
missing ``produces`` caught before anything runs, keys that follow each component's own code."""

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import lmbench.api as api
from lmbench.config.matrix import load_matrix, parse_matrix
from lmbench.core.errors import MatrixError, PluginError
from lmbench.core.plugins import SPECS, Registration, own_modules, registry, source_hash
from lmbench.run.schedule import run_matrix
from lmbench.store import cache, results
from lmbench.testing import check_dataset, check_params
from lmbench_plugins.synthetic.dataset import SyntheticHands

from conftest import tiny_matrix


def register(monkeypatch, kind, name, cls):
    reg = registry()
    monkeypatch.setitem(reg.components, (kind, name), Registration(kind, name, cls, reg.plugins[0]))


def test_every_hook_is_listed_in_the_public_api():
    assert {hook.partition("(")[0] for hook in api.HOOKS} == set(SPECS)
    for hook in api.HOOKS:
        name, _, arguments = hook.partition("(")
        assert arguments.rstrip(")").split(", ") == list(SPECS[name]), hook


class Rooted(SyntheticHands):
    """A dataset with a Path param (it ignores it: the images are generated)."""

    @dataclass
    class Params(SyntheticHands.Params):
        root: Path = Path("~/radiographs")

    unkeyed_params = frozenset({"root"})


def test_a_path_param_takes_a_string_and_expands_it(tmp_path, monkeypatch):
    register(monkeypatch, "dataset", "rooted", Rooted)
    monkeypatch.setenv("XRAYS", str(tmp_path / "xrays"))
    data = tomllib.loads(tiny_matrix(tmp_path).read_text())
    data["datasets"][0] = {"name": "rooted", "params": {"root": "$XRAYS/hands", "n_train": 12}}
    (run, *_) = parse_matrix(data, tmp_path / "m.toml").runs
    assert run.dataset.params["root"] == str(tmp_path / "xrays" / "hands")  # stored as a string
    assert "root" not in run.dataset.keyed
    dataset = run.dataset.instantiate()
    assert dataset.params.root == tmp_path / "xrays" / "hands" and isinstance(dataset.params.root, Path)
    assert Rooted().params.root == Path("~/radiographs")  # a default is as written


class WithDevice(SyntheticHands):
    @dataclass
    class Params(SyntheticHands.Params):
        device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))


class WrongDefault(SyntheticHands):
    @dataclass
    class Params(SyntheticHands.Params):
        sigma: int = 2.5


@pytest.mark.parametrize(("cls", "message"), [
    (WithDevice, "Params.device defaults to device(type='cpu'), not a plain value"),
    (WrongDefault, "Params.sigma default: expected int, got float 2.5"),
])
def test_a_bad_params_default_is_one_line_at_validate_in_plugins_check_and_in_testing(tmp_path, monkeypatch, cls, message):
    register(monkeypatch, "dataset", "careless", cls)
    data = tomllib.loads(tiny_matrix(tmp_path).read_text())
    data["datasets"][0] = {"name": "careless"}
    with pytest.raises(MatrixError, match=r"datasets\[0\].name: dataset 'careless' from plugin .*: " + re.escape(message)):
        parse_matrix(data, tmp_path / "m.toml")
    with pytest.raises(PluginError, match=re.escape(message)):
        registry().get("dataset", "careless")  # what `lmbench plugins --check` calls
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_params(cls.__new__(cls))


def test_a_training_pretrainer_without_produces_is_refused_at_validate(tmp_path, monkeypatch):
    class Forgetful(api.Pretrainer):
        @dataclass
        class Params:
            iterations: api.PositiveInt = 2

        def pretrain(self, context):
            return {}

    register(monkeypatch, "pretrainer", "forgetful", Forgetful)
    with pytest.raises(MatrixError, match=r"pretrainers\[0\].name: pretrainer 'forgetful' trains but declares no "
                                          r"`produces`"):
        load_matrix(tiny_matrix(tmp_path, pretrainers='[[pretrainers]]\nname = "forgetful"'))


def test_a_dataset_missing_its_attributes_is_named_in_one_line(tmp_path, monkeypatch):
    class Nameless(api.Dataset):
        unit, thresholds = "px", (2.0,)  # landmark_names forgotten

        def split(self, name):
            return [f"{name}-0"]

        def load(self, sample_id):
            raise AssertionError("never loaded")

    line = "dataset 'nameless' (Nameless) sets no landmark_names: set them on the class, or in __init__"
    with pytest.raises(AssertionError, match=re.escape(line)):
        check_dataset(Nameless())
    register(monkeypatch, "dataset", "nameless", Nameless)
    data = tomllib.loads(tiny_matrix(tmp_path, labels=(1,)).read_text())
    data["datasets"][0] = {"name": "nameless"}
    summary = run_matrix(parse_matrix(data, tmp_path / "m.toml"), quiet=True)
    assert summary.failures[0][1].startswith(line)


def test_editing_one_component_re_keys_only_what_imports_it():
    assert sorted(own_modules("lmbench_plugins.ssl.mocov3")) == [
        "lmbench_plugins.ssl.base", "lmbench_plugins.ssl.mocov3", "lmbench_plugins.ssl.views"]
    assert "lmbench_plugins.xray.isbi2015" not in own_modules("lmbench_plugins.xray.hand")
    reg = registry()
    versions = {name: reg.code_version(kind, name) for kind, name in
                (("dataset", "isbi2015"), ("dataset", "hand"), ("pretrainer", "mocov3"), ("pretrainer", "simclrv2"))}
    assert len(set(versions.values())) == 4  # one package, four code identities
    assert source_hash("lmbench_plugins.xray.isbi2015") != source_hash("lmbench_plugins.xray.hand")


def test_weights_that_do_not_load_are_not_kept_as_a_finished_pretraining(tmp_path, monkeypatch):
    class Misnamed(api.Pretrainer):
        produces = "detector"

        @dataclass
        class Params:
            pass

        def pretrain(self, context):
            return {"no.such.layer": torch.zeros(2)}

    register(monkeypatch, "pretrainer", "misnamed", Misnamed)
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(1,), pretrainers='[[pretrainers]]\nname = "misnamed"'))
    summary = run_matrix(matrix, quiet=True)
    assert summary.failed == 1 and "none of the 1 tensors pretrainer 'misnamed' returned" in summary.failures[0][1]
    (run,) = results.read_runs([matrix.results_dir])
    folder = cache.entry(matrix.cache_dir, run["pretrain_key"])
    assert (folder / "weights.safetensors").exists() and not (folder / cache.MARKER).exists()

"""What a reorganisation of the code must not change: the keys of the default matrix (changed
only on purpose, with the fixture), and the single list of hooks every other list is read from."""

import re
from pathlib import Path

import pytest

from lmbench import api
from lmbench.config.matrix import load_matrix
from lmbench.core import hookspecs, plugins
from lmbench.core.interfaces import KINDS

from conftest import ROOT

KEYS = Path(__file__).parent / "fixtures" / "default-matrix-keys.txt"


def test_default_matrix_keys_are_pinned(monkeypatch):
    # a change that re-keys the default matrix (and so every result of it) must be deliberate:
    # it rewrites the fixture. The plugins' source hashes re-key a plugin whose code changes, by
    # design: held fixed here, so that the test holds what lmbench itself puts into a key
    monkeypatch.setattr(plugins.Registry, "code_version", lambda self, kind, name: "fixed")
    matrix = load_matrix(ROOT / "benchmarks.toml")
    got = {f"{run.run_key} {run.pretrain_key}" for run in matrix.runs}
    expected = set(KEYS.read_text().splitlines())
    assert len(expected) == 20 and expected <= got  # rows added since may add keys, never change one


def test_every_kind_registers_through_a_hook_of_the_hookspecs():
    names = {name.partition("(")[0] for name in hookspecs.hooks()}
    assert set(plugins.HOOKS.values()) <= names
    assert set(plugins.HOOKS) == set(KINDS)
    assert api.HOOKS == hookspecs.hooks()
    assert "lmbench_register_commands(app)" in api.HOOKS


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_docs_pages_name_no_module_that_does_not_exist(page):
    for path in re.findall(r"`(lmbench/[\w/]+\.py)`", page.read_text()):
        assert (ROOT / path).exists(), f"{page.name} names {path}"

"""A third-party plugin, pip-installed into a folder of its own, seen by the real command line."""

import os
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import FIXTURES, lmbench_cli, tiny_matrix


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(FIXTURES / "lmbench-denoise-plugin"), str(FIXTURES / "lmbench-broken-plugin")],
        check=True, capture_output=True,
    )
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}


def test_plugins_are_listed_with_package_version_and_status(site):
    out = lmbench_cli("plugins", env_extra=site)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    denoise = next(line for line in lines if "denoise" in line)
    assert "pretrainer" in denoise and "lmbench-denoise-plugin" in denoise and "0.3.0" in denoise and "ok" in denoise
    broken = [line for line in lines if "lmbench-broken-plugin" in line]
    assert any("broken" in line and "import failed: ImportError" in line for line in broken)
    assert any("broken" in line and "lmbench_register_heads raised RuntimeError" in line for line in broken)
    assert any("smp-unet" in line and "ok" in line for line in lines)  # the rest still works


def test_every_plugin_mistake_is_one_whole_line_naming_the_hook_and_where(site):
    out = lmbench_cli("plugins", env_extra={**site, "COLUMNS": "1000"})
    assert out.returncode == 0, out.stderr
    broken = {line.split("│")[3].strip(): line.split("broken: ")[1].rstrip(" │") for line in out.stdout.splitlines()
              if "broken: " in line}
    assert re.fullmatch(r"unknown hook lmbench_register_pretrainer at .*lmbench_misspelt/__init__.py:6; "
                        r"did you mean lmbench_register_pretrainers\?", broken["misspelt"]), broken["misspelt"]
    assert re.fullmatch(r"lmbench_register_heads\(registr\) at .*lmbench_wrongarg/__init__.py:6: "
                        r"the hook passes only register, not registr", broken["wrongarg"]), broken["wrongarg"]
    # a command hook that raises leaves every command working, with a warning
    assert broken["badcommand"] == "lmbench_register_commands raised RuntimeError: no commands today"
    assert "plugin 'badcommand' (lmbench-broken-plugin) is broken" in out.stderr
    assert lmbench_cli("validate", "--help", env_extra=site).returncode == 0


def test_strict_mode_makes_a_broken_plugin_fatal(site):
    out = lmbench_cli("plugins", env_extra={**site, "LMBENCH_STRICT_PLUGINS": "1"})
    assert out.returncode == 2
    assert "plugin 'broken' (lmbench-broken-plugin): import failed: ImportError" in out.stdout


def test_a_third_party_pretrainer_runs_in_a_matrix_and_reaches_the_leaderboard(site, tmp_path):
    matrix = tiny_matrix(
        tmp_path, labels=(1, 2),
        pretrainers='[[pretrainers]]\nname = "scratch"\n\n[[pretrainers]]\nname = "denoise"\nparams = { steps = 3 }',
    )
    out = lmbench_cli("run", "--matrix", str(matrix), "--quiet", env_extra=site)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 ok, 0 failed" in out.stdout

    runs = {}
    for path in (tmp_path / "results" / "tiny" / "runs").glob("*.parquet"):
        row = pq.read_table(path).to_pylist()[0]
        runs[(row["pretrainer"], row["labels"])] = row
    assert '"denoise":"lmbench-denoise-plugin==0.3.0"' in runs[("denoise", 1)]["plugin_versions"]
    # one pre-training, shared by both label counts
    assert runs[("denoise", 1)]["pretrain_key"] == runs[("denoise", 2)]["pretrain_key"]
    assert sorted(runs[("denoise", n)]["pretrain_cache_hit"] for n in (1, 2)) == [False, True]
    assert (tmp_path / "cache" / "pretrain" / runs[("denoise", 1)]["pretrain_key"] / "COMPLETE").exists()

    board = lmbench_cli("leaderboard", str(tmp_path / "results"), env_extra=site)
    assert board.returncode == 0, board.stdout + board.stderr
    assert "denoise" in board.stdout and "scratch" in board.stdout


@pytest.mark.parametrize("start", ["from lmbench.core.plugins import registry; registry()",
                                   "from lmbench import cli; cli.add_plugin_commands()"],  # every command's start
                         ids=["registry", "cli"])
def test_listing_plugins_and_starting_a_command_do_not_import_torch(start):
    code = f"import sys; {start}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fixing_a_plugins_source_changes_its_keys(tmp_path, monkeypatch):
    """A plugin run from a working tree is keyed by a hash of its source: a fix retrains."""
    from lmbench.config.matrix import load_matrix
    from lmbench.core.plugins import Plugin, Registration, registry, source_hash

    package = tmp_path / "tree" / "lmbench_fixme"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    code = ("from lmbench.core.interfaces import Pretrainer\n\nclass Fixme(Pretrainer):\n"
            "    produces = 'detector'\n\n    def pretrain(self, context):\n        return {{}}  # {}\n")
    (package / "pretrainer.py").write_text(code.format("buggy"))
    monkeypatch.syspath_prepend(str(tmp_path / "tree"))
    monkeypatch.setitem(registry().components, ("pretrainer", "fixme"), Registration(
        "pretrainer", "fixme", "lmbench_fixme.pretrainer:Fixme", Plugin("fixme", "lmbench-fixme", "0.1")))
    matrix = tiny_matrix(tmp_path, labels=(1,), pretrainers='[[pretrainers]]\nname = "fixme"')
    before = load_matrix(matrix).runs[0]
    assert before.pretrainer.code == f"lmbench-fixme==0.1+{source_hash('lmbench_fixme.pretrainer')}"

    (package / "pretrainer.py").write_text(code.format("fixed"))
    source_hash.cache_clear()
    after = load_matrix(matrix).runs[0]
    assert after.pretrain_key != before.pretrain_key and after.run_key != before.run_key

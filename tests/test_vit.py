"""Frozen foundation features: a timm ViT backbone and its weights from a file or timm's cache,
tested on a small randomly initialised ViT (no weights download here)."""

import pytest
import torch
from safetensors.torch import save_file

from lmbench.api import PretrainContext, SkipRun
from lmbench.config.matrix import load_matrix
from lmbench.run.pretrain import load_part
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench.testing import check_backbone, make

from conftest import tiny_matrix

TINY = "vit_tiny_patch16_224"


def context(backbone, size):
    return PretrainContext(images=torch.zeros(0, 1, size, size), backbone=backbone, num_landmarks=3, seed=0,
                           device=torch.device("cpu"), progress=lambda done, total: None)


def test_the_patch_grid_covers_the_whole_image_at_any_input_size():
    backbone = make("backbone", "vit", model=TINY, feature_blocks=2)
    model = check_backbone(backbone, image_size=32)
    for size, grid in ((64, 4), (72, 4), (100, 6)):  # resized to the nearest multiple of the patch
        maps = backbone.features(model, torch.rand(2, 1, size, size))
        assert [tuple(m.shape) for m in maps] == [(2, 192, grid, grid)] * 2


def test_foundation_weights_come_from_a_file_of_any_image_size_or_the_run_is_skipped(tmp_path):
    backbone = make("backbone", "vit", model=TINY)
    stored = backbone.build_part("vit-encoder", 3, 224).state_dict()  # as published: 224 px, a 14 x 14 grid
    path = tmp_path / "encoder.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in stored.items()}, str(path))
    weights = make("pretrainer", "foundation", weights=str(path)).pretrain(context(backbone, 64))
    assert weights["pos_embed"].shape == (1, 1 + 4 * 4, 192)  # resampled to the run's grid
    assert torch.equal(weights["blocks.0.attn.qkv.weight"], stored["blocks.0.attn.qkv.weight"])
    model = backbone.build(3, 64)
    report = load_part(backbone, model, make("pretrainer", "foundation"), weights)
    assert not report.mismatched and not report.unexpected and set(report.missing) == {"head.weight", "head.bias"}
    with pytest.raises(SkipRun, match="no vit_tiny_patch16_224.lvd142m weights in the local timm cache"):
        make("pretrainer", "foundation").pretrain(context(backbone, 64))
    with pytest.raises(SkipRun, match="does not exist"):
        make("pretrainer", "foundation", weights=str(tmp_path / "absent.pt")).pretrain(context(backbone, 64))


def test_frozen_features_are_matched_in_a_matrix_with_no_training(tmp_path):
    stored = make("backbone", "vit", model=TINY).build_part("vit-encoder", 3, 224).state_dict()
    save_file({name: tensor.contiguous() for name, tensor in stored.items()}, str(tmp_path / "w.safetensors"))
    extra = f"""
[[pretrainers]]
name = "foundation"
params = {{ weights = "{tmp_path / 'w.safetensors'}" }}

[[backbones]]
name = "vit"
params = {{ model = "{TINY}" }}

[[heads]]
name = "feature-match"
params = {{ zooms = [1, 2] }}

[[include]]
pretrainer = "foundation"
head = "feature-match"
"""
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(1,), pretrainers="", extra=extra))
    assert run_matrix(matrix, quiet=True).ok == 1
    (row,) = results.read_runs([matrix.results_dir])
    assert row["backbone"] == "vit" and row["epochs"] == 0 and row["pretrainer"] == "foundation"

"""DDPM pre-training and the DDPM U-Net detector."""

import numpy as np
import pytest
import torch

from lmbench import results
from lmbench.data import prepare
from lmbench.matrix import load_matrix
from lmbench.runner import run_matrix
from lmbench_plugins.ddpm.backbone import DdpmUNet
from lmbench_plugins.ddpm.pretrainer import DdpmPretrainer
from lmbench_plugins.ddpm.sample import sample_images, save_grid
from lmbench_plugins.xray.isbi2015 import Isbi2015

from conftest import SHARED_DATA, pretrain_context, tiny_matrix

SMOKE = DdpmUNet(DdpmUNet.Params(preset="smoke"))


def context(images, saved=None, backbone=SMOKE):
    return pretrain_context(images, backbone, saved)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared x-ray data not found at {SHARED_DATA}")
def test_pretraining_loss_falls_on_real_isbi_images():
    isbi = Isbi2015(Isbi2015.Params(root=str(SHARED_DATA / "isbi2015")))
    images = prepare(isbi, isbi.split("train")[:24], 64).images
    pretrainer = DdpmPretrainer(DdpmPretrainer.Params(iterations=60, batch_size=8, accumulation=1, lr=1e-3))
    saved = {}
    pretrainer.pretrain(context(images, saved))
    first, last = np.mean(pretrainer.losses[:10]), np.mean(pretrainer.losses[-10:])
    assert last < 0.7 * first, (first, last)
    assert list(saved) == [60] and all(k.startswith("unet.") for k in saved[60])


def test_the_detector_receives_the_pretrained_weights_and_drops_the_time_embedding():
    saved = {}
    DdpmPretrainer(DdpmPretrainer.Params(iterations=2, batch_size=2, accumulation=1)).pretrain(
        context(torch.rand(4, 1, 32, 32), saved))
    detector = SMOKE.build(19, 32)
    report = SMOKE.load_pretrained(detector, saved[2])
    assert report.mismatched == ["unet.conv_out.weight", "unet.conv_out.bias"]  # 1 channel -> 19
    assert report.missing == []
    assert report.unexpected and all("time_emb" in k for k in report.unexpected)
    own = detector.state_dict()
    for name in report.loaded:
        assert torch.equal(own[name], saved[2][name]), name
    assert len(report.loaded) == len(own) - 2
    x = torch.rand(3, 1, 32, 32)
    detector.eval()
    out = detector(x)
    assert out.shape == (3, 19, 32, 32)
    assert torch.equal(out, detector(x))  # no timestep: nothing random, nothing time-dependent


def test_a_checkpoint_sweep_is_one_training_run(tmp_path):
    entries = "\n".join(
        f'[[pretrainers]]\nname = "ddpm"\nlabel = "ddpm {n}"\nparams = {{ iterations = {n}, sweep = [2, 4], batch_size = 2 }}\n'
        for n in (2, 4)
    )
    path = tiny_matrix(tmp_path, labels=(1,), pretrainers=entries)
    path.write_text(path.read_text().replace('name = "smp-unet"\nparams = { encoder = "tu-resnet10t", encoder_depth = 3, decoder_channels = [32, 16, 8] }', 'name = "ddpm-unet"'))
    m = load_matrix(path)
    keys = {r.pretrainer.label: r for r in m.runs}
    assert keys["ddpm 2"].pretrain_key == keys["ddpm 4"].pretrain_key
    assert keys["ddpm 2"].run_key != keys["ddpm 4"].run_key
    assert run_matrix(m, quiet=True).ok == 2
    runs = results.read_runs([m.results_dir])
    assert sorted(r["pretrain_cache_hit"] for r in runs) == [False, True]
    folder = m.cache_dir / "pretrain" / keys["ddpm 2"].pretrain_key
    two, four = (torch.load(folder / f"checkpoint-{n}.pt") for n in (2, 4))
    assert not torch.equal(two["unet.conv_in.weight"], four["unet.conv_in.weight"])

    images = sample_images(folder, checkpoint=None, count=2, steps=3, seed=0)
    assert images.shape == (2, 32, 32) and 0 <= images.min() and images.max() <= 1
    save_grid(images, tmp_path / "grid.png", columns=2)
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_ddpm_pairs_only_with_its_unet(tmp_path):
    m = load_matrix(tiny_matrix(tmp_path, labels=(1,), pretrainers='[[pretrainers]]\nname = "ddpm"'))
    assert not m.runs
    assert {why for _, why in m.pruned} == {"ddpm pre-trains the ddpm-unet backbone only"}


def test_ddpm_pretraining_beats_scratch_with_one_label_in_the_default_matrix(tmp_path):
    """benchmarks.toml's DDPM and scratch rows on the DDPM U-Net, one label, seed 0."""
    import tomllib

    from lmbench.matrix import parse_matrix

    from conftest import ROOT

    path = ROOT / "benchmarks.toml"
    data = tomllib.loads(path.read_text())
    data.update(output=str(tmp_path), cache_dir=str(tmp_path / "cache"), labels=[1], seeds=[0])
    data["backbones"] = [b for b in data["backbones"] if b["name"] == "ddpm-unet"]
    data["heads"] = [h for h in data["heads"] if h["name"] == "gaussian"]
    m = parse_matrix(data, path)
    assert {r.pretrainer.name for r in m.runs} == {"ddpm", "scratch"}
    assert run_matrix(m, quiet=True).ok == 2
    mre = {}
    for run in results.read_runs([m.results_dir]):
        metrics = results.read_table("metrics", run["_file"]).to_pylist()
        mre[run["pretrainer"]] = next(r["value"] for r in metrics if r["metric"] == "mre" and r["landmark"] == "all")
    assert mre["ddpm"] < mre["scratch"], mre

"""DDPM pre-training and the DDPM U-Net detector."""

import numpy as np
import pytest
import torch

from lmbench.api import read_weights
from lmbench.config.matrix import load_matrix
from lmbench.data.prepare import prepare
from lmbench.run.pretrain import load_part
from lmbench.run.schedule import run_matrix
from lmbench.store import results
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
    assert list(saved) == [60] and set(saved[60]) == set(SMOKE.build_part("ddpm-unet", 19, 64).state_dict())


PUBLISHED_SMOKE = DdpmUNet(DdpmUNet.Params(preset="smoke", network="published", self_condition=True))


@pytest.mark.parametrize("backbone, out_conv, time_names", [
    (PUBLISHED_SMOKE, "unet.final_conv", ("time_embedding", "time_mlp")),
    (SMOKE, "unet.conv_out", ("time_emb",)),
])
def test_the_detector_receives_the_pretrained_weights_and_drops_the_time_embedding(backbone, out_conv, time_names):
    saved = {}
    pretrainer = DdpmPretrainer(DdpmPretrainer.Params(iterations=2, batch_size=2, accumulation=1))
    pretrainer.pretrain(context(torch.rand(4, 1, 32, 32), saved, backbone))
    detector = backbone.build(19, 32)
    report = load_part(backbone, detector, pretrainer, saved[2])
    assert report.mismatched == [f"{out_conv}.weight", f"{out_conv}.bias"]  # 1 channel -> 19
    assert report.missing == []
    assert report.unexpected and all(any(n in k for n in time_names) for k in report.unexpected)
    own = detector.state_dict()
    for name in report.loaded:
        assert torch.equal(own[name], saved[2][name.removeprefix("unet.")]), name
    assert len(report.loaded) == len(own) - 2
    x = torch.rand(3, 1, 32, 32)
    detector.eval()
    out = detector(x)
    assert out.shape == (3, 19, 32, 32)
    assert torch.equal(out, detector(x))  # no timestep: nothing random, nothing time-dependent


def test_the_published_unet_has_the_authors_size_and_layout():
    """Built on the meta device: no memory, no time. The authors' U-Net at 256 px has
    558,548,225 parameters (their nn_blocks.Unet with dim 256, mults 1-2-4-8, self-condition)."""
    backbone = DdpmUNet(DdpmUNet.Params(preset="published"))
    with torch.device("meta"):
        unet = backbone.build_unet(256)
        detector = backbone.build(19, 256)
    count = sum(p.numel() for p in unet.parameters())
    assert abs(count - 558.5e6) / 558.5e6 < 0.005, count
    widths = [level.blocks[0].block1.proj.out_channels for level in unet.down]
    assert widths == [256, 256, 512, 1024] and unet.mid_block1.block1.proj.out_channels == 2048
    assert all(len(level.blocks) == 2 for level in (*unet.down, *unet.up))
    assert unet.init_conv.in_channels == 2 and unet.init_conv.kernel_size == (1, 1)  # self-conditioning
    assert unet.final_block.block1.proj.in_channels == 512  # the last features and the first, concatenated
    heads = {(a.heads, a.inner_dim // a.heads) for a in unet.modules() if hasattr(a, "to_q")}
    assert heads == {(4, 32)}
    # the detector: the same network without its time MLPs, with 19 outputs
    time_parameters = sum(p.numel() for name, p in unet.named_parameters() if "time_" in name)
    out = unet.final_conv.weight.numel() + unet.final_conv.bias.numel()
    assert sum(p.numel() for p in detector.parameters()) == count - time_parameters - out + 19 * (256 + 1)


def test_the_paper_text_preset_keeps_the_diffusers_unet_of_the_papers_wording():
    with torch.device("meta"):
        unet = DdpmUNet(DdpmUNet.Params(preset="paper-text")).build_unet(256)
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) == 99.8


def test_linear_attention_matches_its_definition():
    """q softmaxed over each head's channels, k over positions, out = (k v^T)^T q, then the
    output projection, a one-group GroupNorm and the residual."""
    from lmbench_plugins.ddpm.published_unet import linear_attention

    torch.manual_seed(0)
    attention = linear_attention(8, heads=2, head_dim=4).eval()
    x = torch.randn(2, 8, 5, 3)
    a = attention
    tokens = a.group_norm(x).flatten(2)  # (b, c, n)
    q, k, v = (torch.einsum("oc,bcn->bon", proj.weight, tokens).view(2, 2, 4, 15) for proj in (a.to_q, a.to_k, a.to_v))
    q, k = q.softmax(dim=2) * 4 ** -0.5, k.softmax(dim=3)
    out = torch.einsum("bhde,bhdn->bhen", torch.einsum("bhdn,bhen->bhde", k, v), q).reshape(2, 8, 15)
    out = torch.einsum("oc,bcn->bon", a.to_out[0].weight, out) + a.to_out[0].bias[:, None]
    expected = a.to_out[2](out.view(2, 8, 5, 3)) + x
    assert torch.allclose(attention(x), expected, atol=1e-5)


def test_pretraining_augmentation_warps_some_images_and_keeps_them_in_range():
    from lmbench.train.augment import augment_images

    images = torch.rand(64, 1, 32, 32)
    low, high = images.amin(dim=(1, 2, 3), keepdim=True), images.amax(dim=(1, 2, 3), keepdim=True)
    images = (images - low) / (high - low)  # min-max normalised, as prepared images are
    generator = torch.Generator().manual_seed(0)
    out = augment_images(images, generator, 0.5, 0.02, 2.0)
    changed = (out != images).flatten(1).any(dim=1)
    assert 16 < int(changed.sum()) < 48  # about half, each with probability 0.5
    assert out.amin() >= 0 and out.amax() <= 1 + 1e-6
    same = augment_images(images, generator, 1.0, 0.0, 0.0)  # an identity warp
    assert torch.allclose(same, images, atol=1e-5)
    shifted = augment_images(images, torch.Generator().manual_seed(1), 1.0, 0.25, 0.0)
    assert not torch.allclose(shifted, images, atol=1e-2)


def test_pretraining_sees_every_image_once_per_epoch():
    from lmbench_plugins.ddpm.pretrainer import ShuffledBatches

    batches = ShuffledBatches(10, 4, torch.Generator().manual_seed(0), "cpu")
    drawn = torch.cat([next(batches) for _ in range(5)])  # 20 draws: two whole epochs
    assert sorted(drawn[:10].tolist()) == list(range(10)) and sorted(drawn[10:].tolist()) == list(range(10))
    generator = torch.Generator().manual_seed(0)
    again = ShuffledBatches(10, 4, generator, "cpu")
    first = torch.cat([next(again) for _ in range(3)])  # mid-epoch: 2 of the second epoch pending
    state, generator_state = again.state_dict(), generator.get_state()
    resumed = ShuffledBatches(10, 4, torch.Generator().set_state(generator_state), "cpu")
    resumed.load_state_dict(state)
    assert torch.equal(torch.cat([first, *(next(resumed) for _ in range(2))]), drawn)


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
    two, four = (read_weights(folder / f"checkpoint-{n}.safetensors") for n in (2, 4))
    assert not torch.equal(two["conv_in.weight"], four["conv_in.weight"])

    images = sample_images(folder, checkpoint=None, count=2, steps=3, seed=0)
    assert images.shape == (2, 32, 32) and 0 <= images.min() and images.max() <= 1
    save_grid(images, tmp_path / "grid.png", columns=2)
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_ddpm_pairs_only_with_its_unet(tmp_path):
    m = load_matrix(tiny_matrix(tmp_path, labels=(1,), pretrainers='[[pretrainers]]\nname = "ddpm"'))
    assert not m.runs
    assert {why for _, why in m.pruned} == {"ddpm produces ddpm-unet weights; smp-unet accepts detector, unet-encoder"}


def test_a_bf16_pretraining_sets_tf32_for_itself_and_leaves_the_flags_as_it_found_them():
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731
    before = flags()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    seen = []
    pretrainer = DdpmPretrainer(DdpmPretrainer.Params(iterations=2, batch_size=2, accumulation=1, precision="bf16"))
    original = pretrainer._pretrain
    pretrainer._pretrain = lambda ctx: (seen.append(flags()), original(ctx))[1]
    try:
        pretrainer.pretrain(context(torch.rand(4, 1, 32, 32)))
        assert seen == [(True, True)] and flags() == (False, False)
        fp32 = DdpmPretrainer(DdpmPretrainer.Params(iterations=2, batch_size=2, accumulation=1, precision="fp32"))
        fp32.pretrain(context(torch.rand(4, 1, 32, 32)))
        assert flags() == (False, False)  # fp32 touches nothing: PyTorch's defaults, as the published code ran
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_weight_standardisation_changes_only_rounding_in_bf16_unless_the_published_rule_is_asked_for():
    from lmbench_plugins.ddpm.published_unet import WeightStandardizedConv2d

    torch.manual_seed(0)
    conv = WeightStandardizedConv2d(4, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(1e-3)  # a kernel variance near eps, so the two epsilons give different functions
    x = torch.randn(2, 4, 8, 8)
    reference = conv(x)
    def bf16():  # activations in bf16, under autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return conv(x.bfloat16()).float()

    torch.testing.assert_close(bf16(), reference, rtol=0.05, atol=0.05)
    conv.eps_by_dtype = True
    torch.testing.assert_close(conv(x), reference)  # fp32 activations: eps 1e-5 either way
    assert bf16().abs().mean() < 0.5 * reference.abs().mean()  # eps 1e-3: another function


def test_the_published_loop_drops_each_epochs_short_batch_and_forces_a_step_at_its_end(monkeypatch):
    from lmbench_plugins.ddpm import pretrainer as module
    from lmbench_plugins.ddpm.pretrainer import ShuffledBatches, epoch_steps

    counts = epoch_steps(37, 8)  # ISBI's 150 images in batches of 4
    assert [counts(s) for s in range(1, 11)] == [8, 8, 8, 8, 5] * 2  # 5 steps an epoch, the last of 20 images
    batches = ShuffledBatches(10, 4, torch.Generator().manual_seed(0), "cpu", drop_last=True)
    epochs = [torch.cat([next(batches) for _ in range(2)]) for _ in range(3)]  # 2 batches of 4 an epoch
    assert all(len(set(e.tolist())) == 8 for e in epochs)  # 2 of the 10 left out each time, never repeated

    seen = {}
    original = module.noise_prediction_loss
    for steps in ("epochs", "steady"):
        seen[steps] = []
        monkeypatch.setattr(module, "noise_prediction_loss",
                            lambda model, x, *a, steps=steps: (seen[steps].append(len(x)), original(model, x, *a))[1])
        params = DdpmPretrainer.Params(iterations=6, batch_size=2, accumulation=2, augment=False, steps=steps)
        DdpmPretrainer(params).pretrain(context(torch.rand(11, 1, 32, 32)))
    assert sum(seen["epochs"]) == 2 * 5 * 2  # 6 steps: two epochs of 5 batches of 2 (one image dropped)
    assert sum(seen["steady"]) == 6 * 2 * 2


def test_the_average_starts_from_the_initial_weights_as_published_or_from_the_first_step():
    images, handed = torch.rand(4, 1, 32, 32), {}
    for name, params in {"initial": dict(ema_start="initial"), "first-step": dict(ema_start="first-step"),
                         "raw": dict(use_ema=False)}.items():
        saved = {}
        DdpmPretrainer(DdpmPretrainer.Params(iterations=1, batch_size=2, accumulation=1, **params)).pretrain(
            context(images, saved))
        handed[name] = saved[1]
    torch.manual_seed(0)  # the pre-training's seed: the same initial weights
    initial = SMOKE.build_part("ddpm-unet", 1, 32).state_dict()
    name = "conv_in.weight"
    assert not torch.equal(handed["raw"][name], initial[name])
    torch.testing.assert_close(handed["first-step"][name], handed["raw"][name])
    torch.testing.assert_close(handed["initial"][name], 0.995 * initial[name] + 0.005 * handed["raw"][name])

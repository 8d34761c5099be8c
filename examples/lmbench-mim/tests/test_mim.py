"""The plugin's own tests, written as any third party would: lmbench.testing on tiny data."""

import torch

from lmbench.testing import check_pretrainer, make, tiny_images
from lmbench_mim.pretrainer import MaskedImageModelling, random_patch_mask


def test_the_mask_hides_the_asked_share_of_whole_patches():
    mask = random_patch_mask(4, 32, 8, 0.5, torch.Generator().manual_seed(0))
    assert mask.shape == (4, 1, 32, 32) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(mask.mean(dim=(1, 2, 3)), torch.full((4,), 0.5))
    assert torch.equal(mask[:, :, ::8, ::8].repeat_interleave(8, 2).repeat_interleave(8, 3), mask)


def test_the_pretrainer_keeps_lmbenchs_contract_and_learns():
    backbone = make("backbone", "smp-unet", encoder="tu-resnet10t", encoder_depth=3, decoder_channels=[32, 16, 8])
    pretrainer = MaskedImageModelling(MaskedImageModelling.Params(iterations=40, lr=3e-3))
    weights = check_pretrainer(pretrainer, backbone, images=tiny_images(16, 32))
    assert any(name.startswith("encoder.") for name in weights)  # the whole network's names
    first, last = sum(pretrainer.losses[:5]) / 5, sum(pretrainer.losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)

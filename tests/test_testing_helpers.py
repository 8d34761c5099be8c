"""lmbench.testing: the contract checks pass on the built-ins and catch a broken plugin."""

import pytest

from lmbench.api import Pretrainer
from lmbench.testing import check_backbone, check_dataset, check_head, check_pretrainer
from lmbench_plugins.contour_hugging.head import ContourHuggingHead
from lmbench_plugins.ddpm.backbone import DdpmUNet
from lmbench_plugins.ddpm.pretrainer import DdpmPretrainer
from lmbench_plugins.gaussian.head import GaussianHead
from lmbench_plugins.smp_unet.backbone import SmpUnet
from lmbench_plugins.ssl.simclrv2 import SimCLRv2
from lmbench_plugins.synthetic.dataset import SyntheticHands

SMALL = SmpUnet(SmpUnet.Params(encoder="tu-resnet10t", encoder_depth=3, decoder_channels=[32, 16, 8]))


def test_the_built_ins_keep_the_contract():
    check_backbone(SMALL)
    published = DdpmUNet(DdpmUNet.Params(preset="smoke", network="published", self_condition=True))
    check_backbone(published)
    check_backbone(DdpmUNet(DdpmUNet.Params(preset="smoke")))
    weights = check_pretrainer(DdpmPretrainer(DdpmPretrainer.Params(iterations=2, batch_size=2, accumulation=1)),
                               published)
    assert "init_conv.weight" in weights
    check_pretrainer(SimCLRv2(SimCLRv2.Params(iterations=2, batch_size=4, accumulation=1, hidden_dim=32)), SMALL)
    check_head(GaussianHead(GaussianHead.Params(sigma=2.0)))
    check_head(ContourHuggingHead())
    check_dataset(SyntheticHands(SyntheticHands.Params(n_train=4, n_val=2, n_test=2)))


class Forgetful(Pretrainer):
    produces = "unet-encoder"

    def pretrain(self, context):
        context.backbone.build_part(self.produces, context.num_landmarks, context.images.shape[-1])


class Prefixed(Forgetful):
    def pretrain(self, context):
        encoder = context.backbone.build_part(self.produces, context.num_landmarks, context.images.shape[-1])
        return {f"encoder.{k}": v for k, v in encoder.state_dict().items()}  # the prefix is lmbench's to add


class Unsaid(Pretrainer):  # weights, but for which part?
    def pretrain(self, context):
        return context.backbone.build(context.num_landmarks, context.images.shape[-1]).state_dict()


class Swapped(GaussianHead):
    def decode(self, logits):
        return super().decode(logits).flip(-1)  # (y, x): a classic slip


@pytest.mark.parametrize("check, message", [
    (lambda: check_pretrainer(Forgetful(), SMALL), "returned nothing from pretrain()"),
    (lambda: check_pretrainer(Prefixed(), SMALL), "it expects the part's own names, e.g. model.conv1"),
    (lambda: check_pretrainer(Forgetful(), DdpmUNet(DdpmUNet.Params(preset="smoke"))),
     "produces unet-encoder weights; ddpmunet accepts detector, ddpm-unet"),
    (lambda: check_pretrainer(Unsaid(), SMALL), "returned weights but does not say what for: set its produces"),
    (lambda: check_head(Swapped(Swapped.Params(sigma=2.0))), "decoding logits fitted to the targets misses"),
])
def test_a_broken_plugin_fails_its_check_with_what_is_wrong(check, message):
    with pytest.raises((AssertionError, Exception), match=message.replace("(", r"\(").replace(")", r"\)")):
        check()


def test_a_matching_head_is_checked_by_matching_and_the_checks_run_at_one_thread():
    import numpy as np
    import torch

    from lmbench.api import MatchingHead
    from lmbench.testing import check_head, check_matching_head, make

    seen = []

    class Centre(MatchingHead):  # always the image's centre, fitted on nothing
        def fit(self, encode, images, landmarks, size):
            seen.append(torch.get_num_threads())

        def locate(self, encode, images, size):
            n = 3
            points = np.stack([np.tile([[im.shape[1] / 2, im.shape[0] / 2]], (n, 1)) for im in images])
            return points, torch.full((len(images), n, size, size), 1 / size**2)

    with pytest.raises(AssertionError, match="kept no tensor attribute"):
        check_head(Centre())
    assert seen == [1]
    backbone = make("backbone", "smp-unet", encoder="tu-resnet10t", encoder_depth=3, decoder_channels=[16, 8, 8])
    points = check_matching_head(make("head", "feature-match"), backbone, threads=2)
    assert points.shape == (1, 3, 2)

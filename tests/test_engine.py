"""The shared fine-tuning engine's validation pass: batched for speed only where the batching
cannot change its value."""

import pytest
import torch

from lmbench.config.profiles import FinetuneConfig
from lmbench.train import engine
from lmbench_plugins.gaussian.head import GaussianHead
from lmbench_plugins.smp_unet.backbone import SmpUnet

from conftest import random_split


def test_the_validation_loss_does_not_depend_on_the_eval_batch_but_the_published_average_does():
    data = random_split(7, num_landmarks=3)  # no batch size below divides 7
    torch.manual_seed(0)
    model = SmpUnet(SmpUnet.Params(encoder="tu-resnet10t", encoder_depth=3, decoder_channels=[32, 16, 8])).build(3, 32)
    head, cpu = GaussianHead(), torch.device("cpu")

    def loss(**settings):
        return engine.validation_loss(model, head, data, FinetuneConfig(batch_size=2, **settings), cpu)

    per_image = loss(eval_batch_size=16)
    assert per_image == pytest.approx(loss(eval_batch_size=1), abs=1e-6) == pytest.approx(loss(eval_batch_size=3), abs=1e-6)
    batch_means = loss(validation_average="batch", eval_batch_size=16)  # over batches of 2, 2, 2 and 1
    assert batch_means == pytest.approx(loss(validation_average="batch", eval_batch_size=1), abs=1e-7)
    assert abs(batch_means - per_image) > 1e-6

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


def test_the_cosine_schedule_warms_up_then_decays_to_zero_within_the_epochs_it_is_given():
    data = random_split(6, num_landmarks=2)
    torch.manual_seed(0)
    model = SmpUnet(SmpUnet.Params(encoder="tu-resnet10t", encoder_depth=3, decoder_channels=[32, 16, 8])).build(2, 32)
    config = FinetuneConfig(epochs=6, batch_size=2, accumulation=1, schedule="cosine", warmup_epochs=2,
                            early_stopping=100, augment=False)
    result = engine.finetune(model, GaussianHead(), data, data, config, lr=1e-3, device=torch.device("cpu"), seed=0)
    lrs = [lr for _, _, lr in result.history]  # each epoch's last learning rate (3 steps an epoch)
    assert lrs[0] == pytest.approx(1e-3 * 4 / 6) and lrs[1] == pytest.approx(1e-3)  # up over 6 steps
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] == pytest.approx(0, abs=1e-12)


def test_an_epoch_counts_as_better_only_by_more_than_min_delta_of_the_best_loss(monkeypatch):
    """Validation losses 1.0, 0.995, 0.99, 0.9, then 0.001 less each epoch: with min_delta 0.01
    the better epochs are 1 and 4 alone, and early stopping counts from epoch 4."""
    losses = iter([])
    monkeypatch.setattr(engine, "validation_loss", lambda *args: next(losses))
    data = random_split(2, num_landmarks=2)
    model = SmpUnet(SmpUnet.Params(encoder="tu-resnet10t", encoder_depth=3, decoder_channels=[32, 16, 8])).build(2, 32)

    def run(min_delta):
        nonlocal losses
        losses = iter([1.0, 0.995, 0.99, 0.9, 0.899, 0.898, 0.897, 0.896, 0.895, 0.894])
        config = FinetuneConfig(epochs=10, batch_size=2, min_delta=min_delta, early_stopping=3, augment=False)
        return engine.finetune(model, GaussianHead(), data, data, config, lr=1e-4, device=torch.device("cpu"), seed=0)

    plain, delta = run(0.0), run(0.01)
    assert (plain.best_epoch, plain.epochs, plain.best_val_loss) == (10, 10, 0.894)
    assert (delta.best_epoch, delta.epochs, delta.best_val_loss) == (4, 7, 0.9)  # stopped after 3 epochs without a gain

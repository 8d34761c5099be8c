import math

import numpy as np
import pytest
import torch

from lmbench_plugins.gaussian.head import GaussianHead, largest_region_centroid


def head(sigma=5.0):
    return GaussianHead(GaussianHead.Params(sigma=sigma))


def test_target_is_the_half_maximum_disk_around_the_rounded_point():
    targets = head(5.0).targets(torch.tensor([[[20.4, 30.6]]]), (64, 64))
    assert targets.shape == (1, 1, 64, 64)
    ys, xs = np.nonzero(targets[0, 0].numpy())
    radius = 5.0 * math.sqrt(2 * math.log(2))  # about 5.89 px
    distances = np.hypot(xs - 20, ys - 31)
    assert distances.max() <= radius
    expected = sum(1 for x in range(64) for y in range(64) if math.hypot(x - 20, y - 31) <= radius)
    assert len(xs) == expected


@pytest.mark.parametrize("point", [(10.3, 50.8), (33.0, 7.2), (60.6, 60.4), (0.2, 31.7)])
def test_targets_and_decoding_round_trip_within_a_pixel(point):
    h = head(2.0)
    landmarks = torch.tensor([[point, (31.0, 31.0), (50.0, 12.0)]])
    logits = h.targets(landmarks, (64, 64)) * 8.0  # a network that learned the targets exactly
    decoded = h.decode(logits)
    assert torch.dist(decoded[0, 0], torch.tensor(point)) <= 1.0


def test_loss_is_cross_entropy_across_channels_on_disk_pixels_only():
    h = head(2.0)
    logits = torch.randn(2, 3, 16, 16)
    targets = h.targets(torch.tensor([[[4.0, 4.0], [10.0, 10.0], [4.0, 12.0]]] * 2), (16, 16))
    manual = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    assert h.loss(logits, targets) == pytest.approx(float(manual), rel=1e-5)
    # background pixels contribute nothing: changing logits there leaves the loss unchanged
    background = targets.sum(dim=1, keepdim=True) == 0
    changed = torch.where(background, logits + 5 * torch.randn_like(logits), logits)
    assert h.loss(changed, targets) == pytest.approx(float(h.loss(logits, targets)), rel=1e-5)


def test_decoding_keeps_the_largest_region():
    heatmap = np.zeros((20, 20))
    heatmap[2, 2] = 1.0  # a single bright pixel
    heatmap[10:15, 10:13] = 0.9  # a larger region above half the maximum
    assert largest_region_centroid(heatmap) == pytest.approx((11.0, 12.0))

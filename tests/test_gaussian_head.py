import math

import cv2
import numpy as np
import pytest
import torch

from lmbench_plugins.gaussian.head import GaussianHead, largest_contour_centroid, largest_region_centroid


def head(sigma=5.0, decode="contour"):
    return GaussianHead(GaussianHead.Params(sigma=sigma, decode=decode))


def test_target_is_the_half_maximum_disk_around_the_rounded_point():
    targets = head(5.0).targets(torch.tensor([[[20.4, 30.6]]]), (64, 64))
    assert targets.shape == (1, 1, 64, 64)
    ys, xs = np.nonzero(targets[0, 0].numpy())
    radius = 5.0 * math.sqrt(2 * math.log(2))  # about 5.89 px
    distances = np.hypot(xs - 20, ys - 31)
    assert distances.max() <= radius
    expected = sum(1 for x in range(64) for y in range(64) if math.hypot(x - 20, y - 31) <= radius)
    assert len(xs) == expected


@pytest.mark.parametrize("decode", ["contour", "region"])
@pytest.mark.parametrize("point", [(10.3, 50.8), (33.0, 7.2), (60.6, 60.4), (0.2, 31.7)])
def test_targets_and_decoding_round_trip_within_a_pixel(point, decode):
    h = head(2.0, decode)
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


def two_channels(first: np.ndarray, rest: float) -> torch.Tensor:
    """(1, 2, H, W) logits: ``first`` and a constant second channel for the softmax."""
    return torch.from_numpy(np.stack([first, np.full_like(first, rest)]))[None].float()


def test_a_negative_maximum_decodes_to_the_origin_by_contour_but_not_by_region():
    logits = np.full((20, 20), -5.0)
    logits[11:14, 9:12] = -1.0  # the peak, still below zero: nothing passes half of it
    both = two_channels(logits, -3.0)
    assert head(decode="contour").decode(both)[0, 0].tolist() == [0.0, 0.0]
    assert head(decode="region").decode(both)[0, 0].tolist() == pytest.approx([10.0, 12.0])


def test_contour_keeps_the_largest_area_where_region_keeps_the_most_pixels():
    logits = np.zeros((20, 20))
    logits[3, 2:14] = 4.0  # a one-pixel line: 12 pixels, a contour of no area
    logits[10:13, 10:13] = 4.0  # a 3x3 block: 9 pixels, a contour of area 4
    both = two_channels(logits, 2.0)
    assert head(decode="region").decode(both)[0, 0].tolist() == pytest.approx([7.5, 3.0])
    assert head(decode="contour").decode(both)[0, 0].tolist() == pytest.approx([11.0, 11.0])


def test_contour_centroid_is_the_centroid_of_the_boundary_polygon():
    mask = np.zeros((12, 12))
    mask[2:5, 2:9] = 1.0  # an L: a 3x7 bar and a 4x3 foot below its left end
    mask[5:9, 2:5] = 1.0
    (contour,), _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    x, y = contour[:, 0, 0].astype(float), contour[:, 0, 1].astype(float)
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y  # the shoelace formula
    area = cross.sum() / 2
    centroid = ((x + np.roll(x, -1)) * cross).sum() / (6 * area), ((y + np.roll(y, -1)) * cross).sum() / (6 * area)
    assert largest_contour_centroid(mask) == pytest.approx(centroid)
    ys, xs = np.nonzero(mask)
    assert abs(centroid[0] - xs.mean()) > 0.05  # the pixel mean, the region rule's, differs
    assert largest_region_centroid(mask) == pytest.approx((xs.mean(), ys.mean()))

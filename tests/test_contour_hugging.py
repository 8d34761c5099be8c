import math

import pytest
import torch

from lmbench_plugins.contour_hugging.head import ContourHuggingHead


def head(subpixel=False):
    return ContourHuggingHead(ContourHuggingHead.Params(subpixel=subpixel))


def test_a_peaked_logit_map_decodes_to_its_peak():
    logits = torch.zeros(2, 3, 16, 20)
    peaks = [[(3, 4), (19, 0), (10, 15)], [(0, 0), (7, 9), (12, 2)]]  # (x, y)
    for b, row in enumerate(peaks):
        for c, (x, y) in enumerate(row):
            logits[b, c, y, x] = 5.0
    assert head().decode(logits).tolist() == [[[float(x), float(y)] for x, y in row] for row in peaks]


def test_the_loss_is_minus_log_p_at_the_target_pixel():
    h = head()
    logits = torch.randn(2, 2, 8, 8)
    landmarks = torch.tensor([[[1.2, 6.7], [7.0, 0.4]], [[3.5, 3.4], [0.0, 0.0]]])
    targets = h.targets(landmarks, (8, 8))
    manual = []
    for b in range(2):
        for c in range(2):
            x, y = round(landmarks[b, c, 0].item()), round(landmarks[b, c, 1].item())
            p = logits[b, c].flatten().softmax(0).reshape(8, 8)[y, x]
            manual.append(-math.log(p.item()))
    assert h.loss(logits, targets).item() == pytest.approx(sum(manual) / 4, rel=1e-5)


def test_subpixel_refinement_moves_towards_the_mass():
    logits = torch.full((1, 1, 9, 9), -20.0)
    logits[0, 0, 4, 4] = math.log(3.0)
    logits[0, 0, 4, 5] = 0.0  # a third of the argmax's probability, to its right
    (x, y), = head(subpixel=True).decode(logits)[0].tolist()
    assert x == pytest.approx(4.25, abs=1e-4) and y == pytest.approx(4.0, abs=1e-4)
    assert head().decode(logits)[0].tolist() == [[4.0, 4.0]]


def test_the_fitted_temperature_recovers_the_one_that_drew_the_targets():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(400, 2, 6, 6, generator=generator)
    true = torch.tensor([0.5, 2.0])  # over-confident, under-confident
    drawn = torch.multinomial((logits / true[None, :, None, None]).reshape(800, 36).softmax(-1), 1, generator=generator)
    index = drawn.reshape(400, 2)
    landmarks = torch.stack([index % 6, index // 6], dim=-1).float()
    h = ContourHuggingHead(ContourHuggingHead.Params(subpixel=True, temperature=True))
    assert h.calibrates
    h.calibrate(logits, landmarks)
    torch.testing.assert_close(h.temperatures, true, rtol=0.15, atol=0)
    # the sub-pixel refinement follows the calibrated probabilities, around the same argmax
    shift = h.decode(logits) - ContourHuggingHead(ContourHuggingHead.Params(subpixel=True)).decode(logits)
    assert 0 < shift.abs().max() < 2


def test_targets_outside_the_image_are_clamped_to_its_edge():
    t = head().targets(torch.tensor([[[-3.0, 2.0], [30.0, 40.0]]]), (10, 12))
    assert t.tolist() == [[2 * 12 + 0, 9 * 12 + 11]]


def test_both_heads_run_in_one_matrix(tmp_path):
    from lmbench.config.matrix import load_matrix
    from lmbench.reporting.leaderboard import build_boards
    from lmbench.run.schedule import run_matrix

    from conftest import tiny_matrix

    m = load_matrix(tiny_matrix(tmp_path, labels=(1,), extra='[[heads]]\nname = "contour-hugging"'))
    assert run_matrix(m, quiet=True).ok == 2
    (board,) = build_boards([m.results_dir])
    assert sorted(row.method[1] for row in board.rows) == ["contour-hugging", "gaussian"]

"""GU2Net (yolo-universal), its Gaussian-BCE head, and mixed-dataset training."""

import itertools
import math
import random
import statistics

import pytest
import torch

from lmbench.config.matrix import load_matrix
from lmbench.core.errors import MatrixError
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench_plugins.yolo_universal.backbone import YoloUniversal
from lmbench_plugins.yolo_universal.head import GaussianBceHead

from conftest import random_split, tiny_matrix

SMALL = YoloUniversal(YoloUniversal.Params(width=8, depth=3, global_channels=8))


def test_the_network_is_the_published_gu2net():
    """Parameter counts of the published GLN(U2Net) built from its config.yaml (dilations
    1,2,5,2,1, a quarter-resolution global network), for ISBI alone and for the three datasets."""
    with torch.device("meta"):
        for counts, published in ((19, 2_742_694), ([19, 37, 6], 4_381_052)):
            assert sum(p.numel() for p in YoloUniversal().build(counts, 512).parameters()) == published


def test_one_network_serves_datasets_of_different_landmark_counts():
    net = SMALL.build([3, 5], 32)
    x = torch.rand(2, 1, 32, 32)
    assert net(x, domain=0).shape == (2, 3, 32, 32)
    assert net(x, domain=1).shape == (2, 5, 32, 32)
    assert SMALL.build(4, 32)(x).shape == (2, 4, 32, 32)


def test_training_on_one_dataset_moves_the_shared_and_its_own_weights_only():
    torch.manual_seed(0)
    net = SMALL.build([3, 5], 32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    head = GaussianBceHead(GaussianBceHead.Params(sigma=2.0))
    landmarks = torch.rand(2, 3, 2) * 31
    head.loss(net(torch.rand(2, 1, 32, 32), domain=0), head.targets(landmarks, (32, 32))).backward()
    optimiser.step()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    own = (".depthwise.{}.", ".norms.{}.", "inputs.{}.", "outputs.{}.", "image_in.{}.", "heatmaps_in.{}.", "stacks.{}.")
    # weights only: a bias followed by batch norm gets no gradient
    specific_0 = {k for k in before if any(part.format(0) in k for part in own) and k.endswith("weight")}
    specific_1 = {k for k in before if any(part.format(1) in k for part in own)}
    shared_weights = {k for k in before if "pointwise" in k and k.endswith("weight")}
    assert specific_0 and specific_0 <= changed
    assert shared_weights and shared_weights <= changed
    assert not (specific_1 & changed)


def test_the_output_is_the_product_of_both_sigmoids_and_the_global_network_sees_the_local_one():
    net = SMALL.build([2], 32).eval()
    image = torch.rand(1, 1, 32, 32)
    x = (image - image.mean()) / image.std(unbiased=False)  # the published recipe's input: z-scored
    local = net.local(x, 0)
    coarse = net.globe(x, torch.sigmoid(local), 0)
    torch.testing.assert_close(torch.sigmoid(net(image)), torch.sigmoid(local) * torch.sigmoid(coarse), atol=1e-5,
                               rtol=1e-4)
    assert not torch.equal(coarse, net.globe(x, torch.zeros_like(local), 0))  # the local-to-global link


def test_the_loss_on_the_logit_of_the_product_is_the_published_bce_on_its_probabilities():
    """GU2Net's code: ``nn.BCELoss`` on sigmoid(local) * sigmoid(global); the same loss and
    gradients from the product's logit, computed without its clamps."""
    torch.manual_seed(0)
    net, head = YoloUniversal(YoloUniversal.Params(width=8, depth=3, global_channels=8)).build([3], 64), GaussianBceHead()
    image, targets = torch.rand(2, 1, 64, 64), head.targets(torch.rand(2, 3, 2) * 63, (64, 64))

    def loss_and_gradient(loss):
        net.zero_grad()
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in net.parameters()])

    ours, our_gradient = loss_and_gradient(head.loss(net(image), targets))
    x = (image - image.mean(dim=(1, 2, 3), keepdim=True)) / image.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
    local = net.local(x, 0)
    product = torch.sigmoid(local) * torch.sigmoid(net.globe(x, torch.sigmoid(local), 0))
    published, published_gradient = loss_and_gradient(torch.nn.functional.binary_cross_entropy(product, targets))
    assert ours == pytest.approx(published, rel=1e-6)
    assert (our_gradient - published_gradient).norm() / published_gradient.norm() < 1e-5


def test_the_published_recipe_standardises_each_image_and_the_lmbench_one_does_not():
    torch.manual_seed(0)
    published = SMALL.build([2], 32).eval()
    unit = YoloUniversal(YoloUniversal.Params(width=8, depth=3, global_channels=8, recipe="lmbench")).build([2], 32)
    unit.load_state_dict(published.state_dict())
    image = torch.rand(2, 1, 32, 32)
    zscored = (image - image.mean(dim=(1, 2, 3), keepdim=True)) / image.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
    with torch.no_grad():
        torch.testing.assert_close(published(image), unit.eval()(zscored))
        assert not torch.equal(unit(image), unit(zscored))


def test_gaussian_bce_targets_peak_at_one_and_decode_by_argmax():
    head = GaussianBceHead(GaussianBceHead.Params(sigma=3.0))
    targets = head.targets(torch.tensor([[[5.0, 7.0], [12.0, 2.0]]]), (16, 20))
    assert targets[0, 0, 7, 5] == 1.0 and targets[0, 1, 2, 12] == 1.0
    corner = math.exp(-(2 * 9**2) / 18)  # the window's corner, 9 px (3 sigma) away on each axis
    assert targets[0, 0, 7, 8] == pytest.approx((math.exp(-9 / 18) - corner) / (1 - corner))
    assert targets[0, 0, 7, 14] == 0 and targets[0, 0, 7, 13] > 0  # cut at 3 sigma
    assert head.decode(torch.logit(targets.clamp(1e-4, 1 - 1e-4))).tolist() == [[[5.0, 7.0], [12.0, 2.0]]]


def published_target(point, shape, sigma, nsigma=3):
    """GU2Net's published ``gaussianHeatmap`` (model/utils/kit.py), restated: a 2r x 2r mask
    centred at index r, min-max scaled, pasted at the integer point."""
    radius = round(nsigma * sigma)
    offsets = torch.arange(2 * radius, dtype=torch.float64) - radius
    mask = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    mask = (mask - mask.min()) / (mask.max() - mask.min())
    heat = torch.zeros(shape, dtype=torch.float64)
    for i, row in enumerate(range(point[0] - radius, point[0] + radius)):
        for j, col in enumerate(range(point[1] - radius, point[1] + radius)):
            if 0 <= row < shape[0] and 0 <= col < shape[1]:
                heat[row, col] = mask[i, j]
    return heat


def test_the_published_window_grid_gives_the_published_target_and_symmetric_its_mirror_image():
    landmark = torch.tensor([[[6.4, 9.6]]])  # x, y in pixels; the published code rounds it to (6, 10)
    published = GaussianBceHead(GaussianBceHead.Params(sigma=2.0)).targets(landmark, (20, 18))[0, 0]
    expected = published_target((10, 6), (20, 18), sigma=2.0)
    torch.testing.assert_close(published.double(), expected, atol=1e-6, rtol=0)
    assert published[10, 0] > 0 and published[10, 12] == 0  # 6 px below the centre, but not 6 above
    symmetric = GaussianBceHead(GaussianBceHead.Params(sigma=2.0, window_grid="symmetric"))
    exact = symmetric.targets(torch.tensor([[[6.0, 10.0]]]), (20, 18))[0, 0]
    assert exact[10, 0] == 0 and exact[10, 1] > 0 and exact[10, 11] > 0 and exact[10, 12] == 0  # 5 px either side
    assert torch.equal(exact[:, :13], exact[:, :13].flip(1)) and torch.equal(exact[4:17], exact[4:17].flip(0))


JOINT = '''
[[datasets]]
name = "synthetic"
label = "hands-b"
params = {{ seed = 1, n_train = 12, n_val = 4, n_test = 6, height = 96, width = 80, n_landmarks = 5 }}

[[backbones]]
name = "yolo-universal"
params = {{ width = 8, depth = 3, global_channels = 8 }}

[[joint]]
datasets = ["synthetic", "hands-b"]
'''


def test_a_joint_group_trains_once_and_reports_each_dataset(tmp_path):
    path = tiny_matrix(tmp_path, labels=(2,), extra=JOINT.format())
    matrix = load_matrix(path)
    joint_runs = [r for r in matrix.runs if r.joint]
    assert sorted(r.dataset.label for r in joint_runs) == ["hands-b", "synthetic"]
    assert len({r.training_key for r in joint_runs}) == 1 and len({r.run_key for r in joint_runs}) == 2
    assert any("smp-unet trains on one dataset at a time" in reason for _, reason in matrix.pruned)
    summary = run_matrix(matrix, quiet=True)
    assert summary.failed == 0 and summary.ok == len(matrix.runs)
    rows = {(r["dataset_label"], r["backbone"], r["joint"]): r for r in results.read_runs([matrix.results_dir])}
    joint_a, joint_b = rows[("synthetic", "yolo-universal", "synthetic+hands-b")], rows[("hands-b", "yolo-universal", "synthetic+hands-b")]
    for same in ("epochs", "best_epoch", "n_parameters"):  # one network, trained once
        assert joint_a[same] == joint_b[same]
    metrics_b = results.read_table("metrics", joint_b["_file"]).to_pylist()
    assert len({m["landmark"] for m in metrics_b}) == 1 + 5  # "all" and the 5 landmarks of hands-b
    single = rows[("hands-b", "yolo-universal", None)]
    assert single["run_key"] != joint_b["run_key"]


def test_a_joint_group_must_name_known_datasets(tmp_path):
    path = tiny_matrix(tmp_path, extra='[[joint]]\ndatasets = ["synthetic", "hands"]\n')
    with pytest.raises(MatrixError, match=r"joint\[0\]\.datasets: no \[\[datasets\]\] entry is labelled 'hands'"):
        load_matrix(path)


def test_the_joint_validation_loss_weighs_images_or_each_dataset_alike():
    from lmbench.config.profiles import FinetuneConfig
    from lmbench.train import engine

    head = GaussianBceHead()
    trains, vals = [random_split(2, seed=0), random_split(2, seed=1)], [random_split(1, seed=2), random_split(5, seed=3)]
    recorded = {}
    for weighting in ("images", "datasets"):
        config = FinetuneConfig(epochs=1, batch_size=2, accumulation=1, augment=False, joint_validation=weighting)
        torch.manual_seed(0)
        model = SMALL.build([2, 2], 32)
        fit = engine.finetune(model, head, trains, vals, config, 1e-3, torch.device("cpu"), seed=0)
        each = [engine.validation_loss(engine.DomainView(model, d), head, v, config, torch.device("cpu")) for d, v in enumerate(vals)]
        recorded[weighting] = (fit.history[0][1], each)
    loss, (a, b) = recorded["images"]
    assert loss == pytest.approx((a * 1 + b * 5) / 6)
    loss, (a, b) = recorded["datasets"]
    assert loss == pytest.approx((a + b) / 2)


def published_mix_order(lengths, rng):
    """GU2Net's MixIter with mix_step 1, restated: the dataset of each batch of one epoch."""
    nums = [[n] for n in range(1, sum(lengths) + 1)]
    rng.shuffle(nums)
    bounds = list(itertools.accumulate(lengths))
    return [next(d for d, bound in enumerate(bounds) if n <= bound) for (n,) in nums]


def switches(order):
    return sum(a != b for a, b in zip(order, order[1:]))


def test_joint_batches_in_turn_or_shuffled_across_datasets_as_published(monkeypatch):
    from lmbench.config.profiles import FinetuneConfig
    from lmbench.train import engine
    from lmbench_plugins.yolo_universal.backbone import PUBLISHED_RECIPE

    assert PUBLISHED_RECIPE["joint_order"] == "shuffled" and FinetuneConfig().joint_order == "turns"
    lengths = [3, 5, 1]
    per_domain = [[(d, k) for k in range(n)] for d, n in enumerate(lengths)]
    generator, rng = torch.Generator().manual_seed(0), random.Random(0)
    ours = [[d for d, _ in engine._interleave(per_domain, "shuffled", generator)] for _ in range(4000)]
    published = [published_mix_order(lengths, rng) for _ in range(4000)]
    for order in ours + published[:100]:
        assert sorted(order) == [0] * 3 + [1] * 5 + [2]  # every batch of every dataset, once an epoch
    # the same distribution of orders: mean dataset switches per epoch, and the first batch's dataset
    assert statistics.mean(map(switches, ours)) == pytest.approx(statistics.mean(map(switches, published)), abs=0.1)
    for d, n in enumerate(lengths):
        assert sum(o[0] == d for o in ours) / 4000 == pytest.approx(n / 9, abs=0.03)
    assert [d for d, _ in engine._interleave(per_domain, "turns", generator)] == [0, 1, 2, 0, 1, 0, 1, 1, 1]
    assert engine._interleave(per_domain[:1], "shuffled", generator) == per_domain[0]  # one dataset: its own order

    seen = []
    real = engine._batch_loss
    monkeypatch.setattr(engine, "_batch_loss", lambda view, *a: seen.append(view.domain) or real(view, *a))
    config = FinetuneConfig(epochs=1, batch_size=1, accumulation=1, augment=False, joint_order="shuffled")
    trains = [random_split(3, seed=0), random_split(5, seed=1)]
    engine.finetune(SMALL.build([2, 2], 32), GaussianBceHead(), trains, trains, config, 1e-3, torch.device("cpu"), seed=0)
    trained = seen[:8]  # then the validation pass's
    assert sorted(trained) == [0] * 3 + [1] * 5 and trained != [0, 1, 0, 1, 0, 1, 1, 1]


def test_validation_every_two_epochs_as_published_keeps_the_best_validated_epoch(monkeypatch):
    """GU2Net's published code validates at epochs 0, 2, 4, ... and the last (0-based): the
    published recipe's ``validate_every = 2``; the weights kept are the best validated epoch's."""
    from lmbench.config.profiles import FinetuneConfig
    from lmbench.train import engine
    from lmbench_plugins.yolo_universal.backbone import PUBLISHED_RECIPE

    assert PUBLISHED_RECIPE["validate_every"] == 2
    data = random_split(2)
    passes = []
    real = engine.validation_loss
    monkeypatch.setattr(engine, "validation_loss", lambda *a: passes.append(1) or real(*a))
    config = FinetuneConfig(epochs=6, batch_size=2, accumulation=1, augment=False, validate_every=2, early_stopping=4)
    fit = engine.finetune(SMALL.build(2, 32), GaussianBceHead(), data, data, config, 1e-3, torch.device("cpu"), seed=0)
    validated = [epoch for epoch, (_, val, _) in enumerate(fit.history, start=1) if math.isfinite(val)]
    assert len(fit.history) == fit.epochs and len(passes) == len(validated)
    assert validated == [e for e in (1, 3, 5, 6) if e <= fit.epochs] and fit.best_epoch in validated
    assert fit.best_val_loss == min(fit.history[e - 1][1] for e in validated)

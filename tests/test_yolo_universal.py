"""GU2Net (yolo-universal), its Gaussian-BCE head, and mixed-dataset training."""

import pytest
import torch
import torch.nn.functional as F

from lmbench.core.errors import MatrixError
from lmbench.run import results
from lmbench.run.matrix import load_matrix
from lmbench.run.runner import run_matrix
from lmbench_plugins.yolo_universal.backbone import YoloUniversal
from lmbench_plugins.yolo_universal.head import GaussianBceHead

from conftest import tiny_matrix

SMALL = YoloUniversal(YoloUniversal.Params(widths=[8, 16, 16], global_channels=8))


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
    specific_0 = {k for k in before if ".depthwise.0." in k or k.startswith(("local_out.0.", "global_out.0."))}
    specific_1 = {k for k in before if ".depthwise.1." in k or k.startswith(("local_out.1.", "global_out.1."))}
    shared_weights = {k for k in before if "pointwise" in k or k.startswith(("local.stem", "globe.stem"))}
    assert specific_0 and specific_0 <= changed
    assert shared_weights and shared_weights <= changed
    assert not (specific_1 & changed)


def test_the_output_is_the_logit_of_the_product_of_both_sigmoids():
    net = SMALL.build([2], 32).eval()
    x = torch.rand(1, 1, 32, 32)
    local = net.local_out[0](net.local(x, 0))
    coarse = F.interpolate(net.global_out[0](net.globe(x, 0)), size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(torch.sigmoid(net(x)), torch.sigmoid(local) * torch.sigmoid(coarse), atol=1e-5, rtol=1e-4)


def test_gaussian_bce_targets_peak_at_one_and_decode_by_argmax():
    head = GaussianBceHead(GaussianBceHead.Params(sigma=3.0))
    targets = head.targets(torch.tensor([[[5.0, 7.0], [12.0, 2.0]]]), (16, 20))
    assert targets[0, 0, 7, 5] == 1.0 and targets[0, 1, 2, 12] == 1.0
    assert targets[0, 0, 7, 8] == pytest.approx(torch.exp(torch.tensor(-9 / 18)).item())
    assert head.decode(torch.logit(targets.clamp(1e-4, 1 - 1e-4))).tolist() == [[[5.0, 7.0], [12.0, 2.0]]]


JOINT = '''
[[datasets]]
name = "synthetic"
label = "hands-b"
params = {{ seed = 1, n_train = 12, n_val = 4, n_test = 6, height = 96, width = 80, n_landmarks = 5 }}

[[backbones]]
name = "yolo-universal"
params = {{ widths = [8, 16, 16], global_channels = 8 }}

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

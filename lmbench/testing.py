"""Contract checks for a plugin's own test suite, on tiny generated data, in seconds.

    from lmbench.testing import check_pretrainer, make

    def test_my_pretrainer_keeps_the_contract():
        backbone = make("backbone", "smp-unet", encoder="tu-resnet10t")   # or your own backbone
        check_pretrainer(MyPretrainer(MyPretrainer.Params(steps=3)), backbone)

Each ``check_*`` runs the component the way a matrix would and raises ``AssertionError``
with what is wrong; each returns what it produced, for further assertions of your own. Each
runs at ``threads`` torch threads (1 by default, as the matrices' ``threads``): tiny networks
run slower on more, many times slower on a busy machine.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from lmbench.core.errors import PluginError
from lmbench.core.interfaces import Backbone, Dataset, HeadStrategy, MatchingHead, PretrainContext, Pretrainer
from lmbench.core.params import build, check_defaults


def at_threads(check):
    """``check`` run at ``threads`` torch intra-op threads (a keyword, 1 by default), restored after."""
    @functools.wraps(check)
    def run(*args, threads: int = 1, **kwargs):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return check(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return run


def tiny_images(count: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(count, 1, size, size) images in [0, 1]: a few bright ellipses on a dark background,
    differently placed in each, enough for a pretext task to have something to learn."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.zeros(count, 1, size, size)
    for i in range(count):
        for _ in range(3):
            cx, cy, rx, ry = (torch.rand(4, generator=generator) * torch.tensor([size, size, size / 4, size / 4])
                              + torch.tensor([0, 0, 2, 2])).tolist()
            images[i, 0] += (((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1).float() * 0.5
    images += 0.05 * torch.rand(images.shape, generator=generator)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (images.amax(dim=(1, 2, 3), keepdim=True) - low)


def check_params(*components) -> None:
    """Each component's ``Params`` defaults are plain values of their declared types, as
    ``lmbench plugins --check`` and ``lmbench validate`` require."""
    for component in components:
        try:
            check_defaults(type(component).Params, type(component).__name__)
        except PluginError as exc:
            raise AssertionError(str(exc)) from None


@at_threads
def check_backbone(backbone: Backbone, num_landmarks: int = 3, image_size: int = 32) -> torch.nn.Module:
    """``build`` gives (B, N, S, S) finite logits that gradients flow through, and every weight
    slot's part builds with tensors that sit under the slot's prefix in the network."""
    check_params(backbone)
    model = backbone.build(num_landmarks, image_size)
    out = model(tiny_images(2, image_size))
    assert out.shape == (2, num_landmarks, image_size, image_size), f"build(...) returned logits of shape {tuple(out.shape)}"
    assert torch.isfinite(out).all(), "the logits are not finite"
    out.square().mean().backward()
    assert any(p.grad is not None for p in model.parameters()), "no gradient reaches the network's parameters"
    own = model.state_dict()
    for slot in backbone.weight_slots():
        part = backbone.build_part(slot.part, num_landmarks, image_size).state_dict()
        inside = [n for n in part if slot.prefix + n in own]
        assert inside, (f"none of part {slot.part!r}'s tensors are in the network under prefix {slot.prefix!r}: "
                        f"e.g. {list(part)[:2]} vs {list(own)[:2]}")
    return model


@at_threads
def check_pretrainer(pretrainer: Pretrainer, backbone: Backbone, num_landmarks: int = 3, image_size: int = 32,
                     images: torch.Tensor | None = None) -> dict[str, torch.Tensor] | None:
    """Pre-trains on tiny images as a matrix would, checks the result as the runner does
    (a state dict, or every checkpoint saved), that it loads into the backbone's network and
    that the health probes (``Pretrainer.features``, ``held_out_loss``) run on it. Returns
    the weights the detector would start from."""
    check_params(pretrainer, backbone)
    from lmbench.evaluate import health
    from lmbench.run.pretrain import checked_result, load_part

    reason = pretrainer.incompatibility(backbone)
    assert reason is None, f"the pretrainer refuses this backbone: {reason}"
    saved: dict[int, dict] = {}
    context = PretrainContext(
        images=images if images is not None else tiny_images(8, image_size), backbone=backbone,
        num_landmarks=num_landmarks, seed=0, device=torch.device("cpu"), progress=lambda done, total: None,
        save_checkpoint=saved.__setitem__,
    )
    weights = pretrainer.pretrain(context)
    if not pretrainer.trains:
        assert weights is None or isinstance(weights, dict), f"pretrain() returned {type(weights).__name__}"
    else:
        weights = checked_result(pretrainer.name, pretrainer, weights, list(saved))
    if pretrainer.checkpoint_param is not None:
        weights = saved[getattr(pretrainer.params, pretrainer.checkpoint_param)]
    if weights is None:
        assert pretrainer.produces is None, f"pretrainer produces {pretrainer.produces!r} weights but returned none"
        return None
    for name, tensor in weights.items():
        assert isinstance(tensor, torch.Tensor) and torch.isfinite(tensor.float()).all(), f"weight {name!r} is not finite"
    model = backbone.build(num_landmarks, image_size)
    load_part(backbone, model, pretrainer, weights)
    assert model(tiny_images(2, image_size)).shape == (2, num_landmarks, image_size, image_size)
    if pretrainer.trains:
        probes = health.pretrain_measures(pretrainer, backbone, weights, context.images, tiny_images(4, image_size),
                                          num_landmarks, 0, torch.device("cpu"), health.HealthSettings())
        assert "probe_error" not in probes, f"the health probes fail on its weights: {probes.get('probe_error')}"
    return weights


@at_threads
def check_head(head: HeadStrategy, num_landmarks: int = 3, size: int = 32) -> torch.Tensor:
    """Targets of the right shape, a finite scalar loss that a few steps lower, and decoding
    that finds landmarks again from logits that learned the targets (within 1.5 px). A
    matching head is checked by ``check_matching_head`` on a small smp U-Net instead."""
    if isinstance(head, MatchingHead):
        return check_matching_head.__wrapped__(head, make("backbone", "smp-unet", encoder="tu-resnet10t",
                                                          encoder_depth=3, decoder_channels=[16, 8, 8]), num_landmarks)
    check_params(head)
    generator = torch.Generator().manual_seed(0)
    landmarks = 4 + torch.rand(2, num_landmarks, 2, generator=generator) * (size - 8)
    targets = head.targets(landmarks, (size, size))
    assert targets.shape[:2] == (2, num_landmarks), f"targets(...) has shape {tuple(targets.shape)}"
    logits = torch.zeros(2, num_landmarks, size, size, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.5)
    losses = []
    for _ in range(30):
        loss = head.loss(logits, targets)
        assert loss.dim() == 0 and math.isfinite(loss.item()), f"loss(...) gave {loss}"
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"the loss did not fall on its own targets: {losses[0]:.4f} -> {losses[-1]:.4f}"
    decoded = head.decode(logits.detach())
    assert decoded.shape == (2, num_landmarks, 2), f"decode(...) returned shape {tuple(decoded.shape)}"
    error = (decoded - landmarks).norm(dim=-1).max().item()
    assert error <= 1.5, f"decoding logits fitted to the targets misses a landmark by {error:.2f} px"
    return decoded


@at_threads
def check_matching_head(head: MatchingHead, backbone: Backbone, num_landmarks: int = 3, size: int = 32) -> np.ndarray:
    """Fitted on one tiny image, it finds that image's landmarks again (within 2 input pixels),
    with a map per landmark summing to 1, and keeps what it fitted in tensor attributes (which
    a saved detector carries). Returns the points, in original pixels."""
    check_params(head, backbone)
    torch.manual_seed(0)
    model = backbone.build(num_landmarks, size).eval()
    image = tiny_images(1, 2 * size, seed=1)[0, 0].numpy()
    generator = torch.Generator().manual_seed(0)
    landmarks = (8 + torch.rand(num_landmarks, 2, generator=generator) * (2 * size - 16)).double().numpy()

    def encode(images: torch.Tensor) -> list[torch.Tensor]:
        maps = backbone.features(model, images)
        assert maps, f"backbone {backbone.name!r} exposes no feature maps"
        return [m.float() for m in maps]

    with torch.no_grad():
        head.fit(encode, [image], [landmarks], size)
        assert any(isinstance(v, torch.Tensor) for v in vars(head).values()), \
            "fit(...) kept no tensor attribute: a saved detector would carry nothing"
        points, maps = head.locate(encode, [image], size)
    points = np.asarray(points)
    assert points.shape == (1, num_landmarks, 2), f"locate(...) returned points of shape {points.shape}"
    assert tuple(maps.shape) == (1, num_landmarks, size, size), f"locate(...) returned maps of shape {tuple(maps.shape)}"
    assert torch.allclose(maps.sum((-2, -1)), torch.ones(1, num_landmarks), atol=1e-4), "a map does not sum to 1"
    error = np.abs(points[0] - landmarks).max() / 2  # an input pixel is two original pixels here
    assert error <= 2, f"matching the image it was fitted on misses a landmark by {error:.2f} input px"
    return points


@at_threads
def check_dataset(dataset: Dataset, samples: int = 2) -> None:
    """Disjoint non-empty splits; the first ``samples`` of each load as a float image in
    [0, 1] with (N, 2) landmarks inside it and a spacing that fits the unit."""
    check_params(dataset)
    missing = dataset.missing_attributes()
    assert missing is None, missing
    splits = {name: dataset.split(name) for name in ("train", "val", "test")}
    for name, ids in splits.items():
        assert ids, f"the {name} split is empty"
    assert not (set(splits["train"]) & set(splits["test"])), "the train and test splits share ids"
    assert dataset.unit in ("mm", "px") and len(dataset.thresholds) > 0, "unit or thresholds missing"
    for ids in splits.values():
        for sample_id in ids[:samples]:
            sample = dataset.load(sample_id)
            image = np.asarray(sample.image)
            assert image.ndim == 2 and image.dtype == np.float32, f"{sample_id}: image {image.dtype} {image.shape}"
            assert 0 <= image.min() and image.max() <= 1, f"{sample_id}: image values outside [0, 1]"
            assert sample.landmarks.shape == (dataset.num_landmarks, 2), f"{sample_id}: landmarks {sample.landmarks.shape}"
            height, width = image.shape
            inside = (sample.landmarks >= -0.5).all() and (sample.landmarks[:, 0] <= width - 0.5).all() \
                and (sample.landmarks[:, 1] <= height - 0.5).all()
            assert inside, f"{sample_id}: a landmark lies outside the image"
            assert (sample.spacing is not None) == (dataset.unit == "mm"), f"{sample_id}: spacing {sample.spacing}"


def make(kind: str, name: str, **params):
    """An installed component by its registered name (a built-in backbone, say), as a matrix
    entry ``{name = NAME, params = {...}}`` would make it."""
    from lmbench.core.plugins import registry

    cls = registry().get(kind, name)
    component = cls(build(cls.Params, params, f"{kind} {name}"))
    component.name = name
    return component

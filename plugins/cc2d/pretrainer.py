"""CC2D's self-supervised stage (Yao et al., MICCAI 2021, "One-shot medical landmark detection"):
an encoder trained so that a point of a random patch finds itself in the whole image by
cosine similarity of their feature maps, at every scale, coarse to fine.

One step, for each image of the batch: a patch half the image's side at a random place,
turned and scaled a little and its contrast changed (``views``); ``queries`` points drawn in
its central 80%. Each point's feature vector in the patch's maps is compared with every
position of the image's map of the same level (cosine similarity times ``temperature``), and
a cross-entropy asks for the position the point came from: over the whole map at the
coarsest level, over a window of ``nearby`` cells around it at the finer ones, with a bias
that grows with the distance from it (``strength`` per cell, up to ``clip``), as the authors'
loss. The levels are the encoder's stages the ``feature-match`` head compares, coarsest first,
so what is trained is exactly what is matched.

As published: Adam at 1e-3 with weight decay 1e-4, batch 8, temperature 10, strength 0.07,
clip 0.8, nearby 11, patches of half the side, five levels. Differences: ``queries`` points
per patch (the authors draw one); the encoder is the ``smp-unet``'s, from random weights or,
with ``start``, ImageNet's (theirs is an ImageNet VGG-19 with a decoder making the maps); a
cosine learning-rate schedule in place of halving it every 50 epochs. The second stage
(pseudo-labels on the training pool, then a detector trained on them) is not built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lmbench.api import (
    LmbenchError,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    PretrainContext,
    Pretrainer,
    UnitInterval,
    train_steps,
)
from lmbench_plugins.imagenet.pretrainer import ImageNet


@dataclass
class Patches:
    """A batch of patches and where their query points are, in the patch and in the image."""

    images: torch.Tensor  # (B, 1, P, P)
    in_patch: torch.Tensor  # (B, Q, 2) x, y in patch pixels
    in_image: torch.Tensor  # (B, Q, 2) x, y in image pixels


def draw_patches(images: torch.Tensor, share: float, queries: int, rotation: float, scale: float, jitter: float,
                 generator: torch.Generator) -> Patches:
    """Random patches of ``images`` (side ``share`` of theirs), each turned by up to
    ``rotation`` degrees and scaled by up to ``scale`` about its centre, its brightness and
    contrast changed by up to ``jitter``; query points in the central 80% of the patch."""
    b, _, size, _ = images.shape
    side = max(32, round(size * share) // 32 * 32)  # the encoders halve it up to five times
    corner = torch.randint(0, size - side + 1, (b, 2), generator=generator).float()  # x, y
    in_image = corner[:, None] + side * (0.1 + 0.8 * torch.rand(b, queries, 2, generator=generator))
    angle = torch.deg2rad((2 * torch.rand(b, generator=generator) - 1) * rotation)
    zoom = 1 + (2 * torch.rand(b, generator=generator) - 1) * scale
    # the patch's grid in the image's normalised coordinates (align_corners=False)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    half = side / size
    centre = (corner + side / 2) / size * 2 - 1
    theta = torch.stack([torch.stack([cos * half, -sin * half, centre[:, 0]], 1),
                         torch.stack([sin * half, cos * half, centre[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (b, 1, side, side), align_corners=False)
    patches = F.grid_sample(images, grid, align_corners=False, padding_mode="border")
    # each point's place in the patch: the inverse of the patch's map, in pixels
    offset = (in_image - (corner[:, None] + side / 2)) / (side / 2)  # in the patch's unrotated units
    inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1) * (zoom ** 2)[:, None, None]
    in_patch = ((torch.einsum("bij,bqj->bqi", inverse, offset) + 1) * side / 2).clamp(0, side)  # turned off it: its edge
    brightness = 1 - jitter * torch.rand(b, 1, 1, 1, generator=generator)
    contrast = 1 + jitter * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)
    mean = patches.mean((2, 3), keepdim=True)
    patches = ((patches - mean) * contrast + mean) * brightness
    return Patches(patches.clamp(0, 1), in_patch, in_image)


def vectors_at(features: torch.Tensor, points: torch.Tensor, size: int) -> torch.Tensor:
    """(B, Q, C) bilinear samples of ``features`` (B, C, h, w) at ``points`` (B, Q, 2) given in
    pixels of a ``size`` px image."""
    grid = (points / size * 2 - 1)[:, :, None]  # (B, Q, 1, 2), align_corners=False
    return F.grid_sample(features, grid, align_corners=False).squeeze(-1).transpose(1, 2)


def offsets(cells: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, h*w) rows and columns from each of ``cells`` (K, 2: x, y) to every position of an h x w map."""
    ys, xs = torch.meshgrid(torch.arange(h, device=cells.device), torch.arange(w, device=cells.device), indexing="ij")
    return ys.reshape(1, -1) - cells[:, 1:2], xs.reshape(1, -1) - cells[:, 0:1]


def level_loss(image_map: torch.Tensor, query: torch.Tensor, truth: torch.Tensor, size: int, nearby: int | None,
               temperature: float, strength: float, clip: float) -> torch.Tensor:
    """Mean cross-entropy, over the queries, of finding ``truth`` (B, Q, 2 image pixels) in
    ``image_map`` (B, C, h, w) from ``query`` vectors (B, Q, C); within ``nearby`` cells of it
    where given. The authors' margin: a bias growing with each position's distance from the
    truth, ``strength`` per cell up to ``clip``, in units of the temperature."""
    h, w = image_map.shape[-2:]
    cells = (truth / (size / h)).floor().clamp(min=0, max=h - 1).long().reshape(-1, 2)  # (K, 2) x, y
    flat = F.normalize(image_map.flatten(2), dim=1)  # (B, C, h*w)
    logits = torch.einsum("bqc,bcn->bqn", F.normalize(query, dim=-1), flat).reshape(-1, h * w) * temperature
    dy, dx = offsets(cells, h, w)
    logits = logits + (torch.hypot(dy.float(), dx.float()) * strength * temperature).clamp(max=clip * temperature)
    if nearby is not None:  # the finer levels compare only a window around the truth
        logits = logits.masked_fill((dy.abs() > nearby) | (dx.abs() > nearby), float("-inf"))
    return F.cross_entropy(logits, cells[:, 1] * w + cells[:, 0])


class Cc2d(Pretrainer):
    data_parallel = False

    @dataclass
    class Params:
        iterations: PositiveInt = 5600  # the authors': 300 epochs of 150 images in batches of 8
        sweep: list[int] = field(default_factory=list)  # more checkpoints of the same run
        batch_size: PositiveInt = 8
        lr: PositiveFloat = 1e-3
        weight_decay: NonNegativeFloat = 1e-4
        temperature: PositiveFloat = 10.0
        strength: NonNegativeFloat = 0.07  # the distance bias per cell, in units of the temperature
        clip: NonNegativeFloat = 0.8  # ... and its largest value
        nearby: PositiveInt = 11  # cells each side of the truth that the finer levels compare
        levels: PositiveInt = 5  # the encoder's stages trained, coarsest first
        patch: UnitInterval = 0.5  # the patch's side, as a share of the image's
        queries: PositiveInt = 8  # points per patch (the authors: 1)
        rotation: NonNegativeFloat = 10.0  # degrees, each way
        scale: UnitInterval = 0.1  # each way
        jitter: UnitInterval = 0.3  # brightness and contrast
        #: "" to start from random weights, else where the encoder's ImageNet weights come from,
        #: as the ``imagenet`` pretrainer's ``weights`` param (the authors start from ImageNet)
        start: str = ""

    profile_defaults = {
        "smoke": {"iterations": 150, "batch_size": 8},
        "quick": {"iterations": 400, "batch_size": 8},
    }
    checkpoint_param = "iterations"
    produces = "unet-encoder"

    def pretrain(self, context: PretrainContext):
        p, device = self.params, context.device
        size = context.images.shape[-1]
        torch.manual_seed(context.seed)
        backbone = context.backbone
        # the whole network, so that the maps trained are the backbone's own ``features``: what
        # the matching head compares; only the part's weights train and are handed on
        model = backbone.build(context.num_landmarks, size).to(device).eval()
        encoder = model.get_submodule(backbone.slot(self.produces).prefix.rstrip("."))
        if p.start:
            encoder.load_state_dict(self._imagenet().pretrain(context))
        with torch.no_grad():  # in eval mode: batch norms learn nothing from this look
            stages = len(backbone.features(model, context.images[:1].to(device)))
        model.train()
        if p.levels > stages:
            raise LmbenchError(f"{self.name}: levels = {p.levels}, but {backbone.name} gives {stages} feature maps")
        optimiser = torch.optim.Adam(encoder.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        checkpoints = self.checkpoints()
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, checkpoints[-1]) / checkpoints[-1])))
        generator = torch.Generator().manual_seed(context.seed)

        def maps(x: torch.Tensor) -> list[torch.Tensor]:
            return backbone.features(model, x)[:p.levels]  # coarsest first

        def batch_loss(step: int, total: int, generator: torch.Generator = generator) -> torch.Tensor:
            index = torch.randint(0, len(context.images), (p.batch_size,), generator=generator)
            images = context.images[index]
            patches = draw_patches(images, p.patch, p.queries, p.rotation, p.scale, p.jitter, generator)
            whole, parts = maps(images.to(device)), maps(patches.images.to(device))
            side = patches.images.shape[-1]
            return sum(level_loss(image_map, vectors_at(part, patches.in_patch.to(device), side),
                                  patches.in_image.to(device), size, None if level == 0 else p.nearby,
                                  p.temperature, p.strength, p.clip)
                       for level, (image_map, part) in enumerate(zip(whole, parts)))

        self.losses = train_steps(
            context, optimiser, batch_loss, who=self.name, checkpoints=checkpoints,
            weights=lambda: dict(encoder.state_dict()), after_step=lambda step, total: schedule.step(),
            chance=self.untrained_loss(encoder, batch_loss, generator),
            state={"encoder": encoder, "schedule": schedule, "generator": generator},
        )
        return None

    def _imagenet(self) -> ImageNet:
        return ImageNet(ImageNet.Params(weights=self.params.start))

    def incompatibility(self, backbone):
        return super().incompatibility(backbone) or (self._imagenet().incompatibility(backbone) if self.params.start
                                                     else None)

    @staticmethod
    def untrained_loss(encoder, batch_loss, generator: torch.Generator, batches: int = 8) -> float:
        """The loss of the encoder as initialised on the first ``batches`` training batches:
        what "learned nothing" means here, since random convolutions already find a patch
        better than features that are all alike. Drawn from a copy of the training generator,
        so the training draws stay as they are; batch norms see these batches and are put back."""
        before = {name: tensor.clone() for name, tensor in encoder.state_dict().items()}
        with torch.no_grad():
            draws = torch.Generator().set_state(generator.get_state())
            loss = sum(float(batch_loss(0, 0, draws)) for _ in range(batches)) / batches
        encoder.load_state_dict(before)
        return loss

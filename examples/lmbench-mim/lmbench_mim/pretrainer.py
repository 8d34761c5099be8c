"""Masked image modelling (SimMIM, Xie et al., CVPR 2022) on the whole detector network.

Square patches of each unlabeled image are hidden (set to the image mean); the network,
with one output channel, learns to paint them back, its loss the L1 error on the hidden
pixels only. Every backbone accepts weights for its whole network, so this works with any.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lmbench.api import LmbenchError, PositiveFloat, PositiveInt, PretrainContext, Pretrainer, UnitInterval, train_steps


def random_patch_mask(batch: int, size: int, patch: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """(batch, 1, size, size) mask, 1 on hidden pixels: ``ratio`` of the patch grid, per image."""
    cells = size // patch
    scores = torch.rand(batch, cells * cells, generator=generator)
    hidden = scores.argsort(dim=1)[:, : round(ratio * cells * cells)]
    grid = torch.zeros(batch, cells * cells).scatter_(1, hidden, 1.0).view(batch, 1, cells, cells)
    return F.interpolate(grid, scale_factor=patch, mode="nearest")


class MaskedImageModelling(Pretrainer):
    @dataclass
    class Params:
        iterations: PositiveInt = 2000  # the checkpoint the detector starts from
        sweep: list[int] = field(default_factory=list)  # more checkpoints of the same run
        batch_size: PositiveInt = 8
        lr: PositiveFloat = 1e-4
        patch: PositiveInt = 8  # pixels per side of a hidden square, at the network's input size
        mask_ratio: UnitInterval = 0.6

    profile_defaults = {"smoke": {"iterations": 100, "lr": 1e-3}, "quick": {"iterations": 300, "lr": 5e-4}}
    checkpoint_param = "iterations"
    produces = "detector"  # the whole network, which every backbone accepts

    def pretrain(self, context: PretrainContext):
        p, images = self.params, context.images
        size = images.shape[-1]
        if size % p.patch:
            raise LmbenchError(f"{self.name}: image size {size} is not a multiple of patch {p.patch}")
        torch.manual_seed(context.seed)
        # one output map, the reconstructed image: the detector's last layer, sized for its landmarks, is not handed on
        model = context.backbone.build_part(self.produces, num_landmarks=1, image_size=size).to(context.device).train()
        generator = torch.Generator().manual_seed(context.seed)

        def batch_loss(step, total):
            index = torch.randint(len(images), (p.batch_size,), generator=generator)
            clean = images[index]
            mask = random_patch_mask(p.batch_size, size, p.patch, p.mask_ratio, generator)
            filled = clean.mean(dim=(2, 3), keepdim=True)
            masked = (clean * (1 - mask) + filled * mask).to(context.device)
            mask, clean = mask.to(context.device), clean.to(context.device)
            return ((model(masked) - clean).abs() * mask).sum() / mask.sum().clamp_min(1)

        self.losses = train_steps(
            context, torch.optim.AdamW(model.parameters(), lr=p.lr, fused=True), batch_loss, who=self.name,
            checkpoints=self.checkpoints(), weights=model.state_dict,
            state={"model": model, "generator": generator},  # what a killed run resumes from
        )

"""``yolo-universal``: GU2Net as a backbone, for one dataset or several trained together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lmbench.api import Backbone, PluginError, PositiveInt
from lmbench_plugins.yolo_universal.network import GU2Net

#: GU2Net's own training (its config.yaml): Adam 1e-4 with weight decay 1e-4, a cyclic
#: learning rate up to 1e-2 (triangular2, 2000 steps up and down, stepped every batch), the
#: BCE summed over pixels, batch 4, 100 epochs of one pass over the labelled images, the best
#: validation epoch kept; no augmentation: the published code draws its rotation and
#: translation once per dataset (probability 0.1 each), which with its seed applies none.
#: ``augment = true`` warps each sample with probability 0.1 instead, without scaling.
PUBLISHED_RECIPE = {
    "optimizer": "adam", "lr": 1e-4, "lr_scratch": 1e-4, "weight_decay": 1e-4, "schedule": "cyclic",
    "cyclic_max_lr": 1e-2, "cyclic_half_period": 2000, "loss_reduction": "sum", "batch_size": 4,
    "accumulation": 1, "epochs": 100, "early_stopping": 100, "samples_per_epoch": 0,
    "augment": False, "augment_probability": 0.1, "max_scale": 0.0, "joint_validation": "datasets",
    "joint_order": "shuffled", "validate_every": 2,
}


class YoloUniversal(Backbone):
    """GU2Net. ``num_landmarks`` may be a list, one count per dataset of a joint run; the
    network's forward then takes the dataset's index as ``domain``."""

    @dataclass
    class Params:
        width: PositiveInt = 64  # the local U-Net's first level; widths double per level
        depth: PositiveInt = 5  # levels of the local U-Net
        global_channels: PositiveInt = 128
        dilations: list[int] = field(default_factory=lambda: [1, 2, 5, 2, 1])
        recipe: Literal["published", "lmbench"] = "published"  # GU2Net's own training, or the shared engine's
        # None: the recipe's (published: "zscore", each image standardised as its loaders do;
        # lmbench: "unit", the [0, 1] images every backbone gets)
        input_norm: Literal["zscore", "unit"] | None = None

    # GU2Net keeps full resolution in its first level, so it costs far more per image than
    # the smp U-Net: the CPU profiles shrink it
    profile_defaults = {
        "smoke": {"width": 8, "depth": 3, "global_channels": 16},
        "quick": {"width": 16, "depth": 4, "global_channels": 32},
    }
    joint_training = True

    @classmethod
    def finetune_defaults(cls, params):
        return dict(PUBLISHED_RECIPE) if params.recipe == "published" else {}

    def build(self, num_landmarks, image_size):
        p = self.params
        if image_size % 2 ** (p.depth - 1) or image_size % 4:
            raise PluginError(f"yolo-universal: image size {image_size} is not divisible by 2**{p.depth - 1} and 4")
        counts = list(num_landmarks) if isinstance(num_landmarks, (list, tuple)) else [num_landmarks]
        zscore = (p.input_norm or ("zscore" if p.recipe == "published" else "unit")) == "zscore"
        return GU2Net(counts, p.width, p.depth, p.global_channels, list(p.dilations), standardise=zscore)

    def features(self, model, images):
        """The local U-Net's encoder levels, coarsest first, as the detector computes them."""
        maps: list = []
        hooks = [level.register_forward_hook(lambda module, args, out: maps.append(out)) for level in model.local.down]
        try:
            model(images)
        finally:
            for hook in hooks:
                hook.remove()
        return maps[::-1]

"""``yolo-universal``: GU2Net as a backbone, for one dataset or several trained together."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmbench.api import Backbone, PluginError
from lmbench_plugins.yolo_universal.network import GU2Net


class YoloUniversal(Backbone):
    """GU2Net. ``num_landmarks`` may be a list, one count per dataset of a joint run; the
    network's forward then takes the dataset's index as ``domain``."""

    @dataclass
    class Params:
        widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 512])
        global_channels: int = 128
        dilations: list[int] = field(default_factory=lambda: [1, 2, 5, 2, 1])

    # GU2Net keeps full resolution in its first level, so it costs far more per image than
    # the smp U-Net: the CPU profiles halve its widths
    profile_defaults = {
        "smoke": {"widths": [8, 16, 32], "global_channels": 16},
        "quick": {"widths": [16, 32, 64, 128], "global_channels": 32},
    }
    joint_training = True

    def build(self, num_landmarks, image_size):
        p = self.params
        if image_size % 2 ** (len(p.widths) - 1) or image_size % 4:
            raise PluginError(f"yolo-universal: image size {image_size} is not divisible by 2**{len(p.widths) - 1} and 4")
        counts = list(num_landmarks) if isinstance(num_landmarks, (list, tuple)) else [num_landmarks]
        return GU2Net(counts, list(p.widths), p.global_channels, list(p.dilations))

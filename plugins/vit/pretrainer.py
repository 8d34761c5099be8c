"""Frozen foundation weights for the ``vit`` backbone (DINOv2 ViT-S/14 by default), learnt from
no image of the matrix. Nothing downloads: the weights come from timm's Hugging Face cache (as
``imagenet``'s do) or from a file (safetensors, or a PyTorch state dict read without pickles);
where neither is at hand the runs are skipped with a sentence saying how to get them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.layers import resample_abs_pos_embed

from lmbench.api import PluginError, PretrainContext, Pretrainer, SkipRun


class Foundation(Pretrainer):
    """``weights``: "hub" (timm's pretrained tag for the backbone's model, from the local cache)
    or a path to the encoder's state dict with timm's names."""

    @dataclass
    class Params:
        weights: str = "hub"
        tag: str = "lvd142m"  # timm's pretrained tag of the model (DINOv2's: lvd142m)

    trains = False
    produces = "vit-encoder"

    def pretrain(self, context: PretrainContext):
        slot = context.backbone.slot(self.produces)
        target = context.backbone.build_part(self.produces, context.num_landmarks, context.images.shape[-1])
        source = self._from_hub(slot.architecture, target) if self.params.weights == "hub" else self._from_file()
        own = target.state_dict()
        absent = [name for name in own if name not in source]
        if absent:
            raise PluginError(f"foundation: the weights lack {len(absent)} of the encoder's {len(own)} tensors, "
                              f"e.g. {', '.join(absent[:4])}")
        weights = {name: source[name] for name in own}
        if weights["pos_embed"].shape != own["pos_embed"].shape:  # stored for another image size
            prefix = 0 if getattr(target, "no_embed_class", False) else target.num_prefix_tokens
            weights["pos_embed"] = resample_abs_pos_embed(weights["pos_embed"], list(target.patch_embed.grid_size),
                                                          num_prefix_tokens=prefix)
        return weights

    def _from_hub(self, model: str, target: torch.nn.Module) -> dict[str, torch.Tensor]:
        try:
            encoder = timm.create_model(f"{model}.{self.params.tag}", pretrained=True, num_classes=0,
                                        img_size=target.patch_embed.img_size, dynamic_img_size=True)
        except (OSError, RuntimeError) as exc:  # huggingface_hub: not in the local cache while offline
            raise SkipRun(f"foundation: no {model}.{self.params.tag} weights in the local timm cache; fill it once "
                          f"online (HF_HUB_OFFLINE=0) or set the pretrainer's weights param to a file") from exc
        return encoder.state_dict()

    def _from_file(self) -> dict[str, torch.Tensor]:
        path = Path(self.params.weights).expanduser()
        if not path.is_file():
            raise SkipRun(f"foundation: weights file {path} does not exist")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(path))
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise PluginError(f"foundation: {path} is not a readable state dict ({type(exc).__name__})") from exc
        return state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state

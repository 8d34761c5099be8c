"""A run's pre-training: through the cache, on one process or data-parallel, with its health measures; and its weights loaded into the detector."""

from __future__ import annotations

from pathlib import Path

import torch

from lmbench.config.specs import RunSpec
from lmbench.core.errors import LmbenchError, PluginError
from lmbench.core.interfaces import Backbone, LoadReport, PretrainContext, Pretrainer
from lmbench.evaluate import health
from lmbench.run.context import RunContext
from lmbench.store import cache, results
from lmbench.train import distributed, timing


def pretrain(spec: RunSpec, pretrainer: Pretrainer, backbone: Backbone, num_landmarks: int,
              ctx: RunContext, progress) -> tuple:
    """(weights, cache hit, seconds spent training, health measures) of the run's pre-training."""
    curve: list[dict] = []

    folder = cache.entry(ctx.cache_dir, spec.pretrain_key)

    def compute(images: torch.Tensor, save=lambda step, weights: None):
        context = PretrainContext(
            images=images, backbone=backbone, num_landmarks=num_landmarks,
            seed=spec.pretrain_seed, device=ctx.device, progress=progress, save_checkpoint=save,
            record_loss=lambda step, loss, chance: curve.append({"step": step, "loss": loss, "chance": chance}),
            resume_path=folder / cache.RESUME if pretrainer.trains else None, resume_every=spec.resume_every,
        )
        return pretrainer.pretrain(context)

    if not pretrainer.trains:
        return compute(torch.zeros(0, 1, spec.image_size, spec.image_size)), False, 0.0, {}

    def train_on_pool(save):
        dataset, prepared = ctx.data.get(spec.pool_dataset, spec.image_size, resize=pretrainer.pool_resize)
        images = prepared.subset(dataset.pretrain_pool()).images
        if ctx.nproc * ctx.nodes > 1:
            weights = pretrain_data_parallel(spec, pretrainer, images, num_landmarks, ctx, folder)
        else:
            weights = compute(images, save)
            results.write_pretrain_curve(spec.pretrain_key, curve, folder / results.PRETRAIN_CURVE)
        # every checkpoint on disk, those a killed run wrote before the state it resumed from among them
        saved = [step for step in pretrainer.checkpoints() if (folder / cache.weights_file(step)).exists()]
        return checked_result(spec.pretrainer.name, pretrainer, weights, saved)

    weights, hit, seconds = cache.cached(
        ctx.cache_dir, spec.pretrain_key, spec.pretrain_identity(), train_on_pool, spec.pretrainer.checkpoint
    )
    return weights, hit, seconds, pretrain_health(spec, pretrainer, backbone, weights, num_landmarks, ctx, folder)


def pretrain_data_parallel(spec: RunSpec, pretrainer: Pretrainer, images: torch.Tensor, num_landmarks: int,
                            ctx: RunContext, folder: Path):
    if not pretrainer.data_parallel:
        raise LmbenchError(f"pretrainer {spec.pretrainer.name!r} does not pre-train data-parallel: run it with "
                           f"--nproc 1")
    if ctx.device.type == "cuda" and torch.cuda.device_count() < ctx.nproc:
        raise LmbenchError(f"--nproc {ctx.nproc} needs {ctx.nproc} GPUs; this machine has {torch.cuda.device_count()}")
    return distributed.pretrain(ctx.nproc, {
        "pretrainer": spec.pretrainer, "backbone": spec.backbone, "images": images, "num_landmarks": num_landmarks,
        "seed": spec.pretrain_seed, "device": ctx.device.type, "folder": folder, "key": spec.pretrain_key,
        "resume_every": spec.resume_every,
    }, ctx.nodes)


def pretrain_health(spec: RunSpec, pretrainer: Pretrainer, backbone: Backbone, weights, num_landmarks: int,
                     ctx: RunContext, folder: Path) -> dict:
    """The health measures of one checkpoint of a pre-training: its network probed once and
    kept in the cache entry, its curve (up to that checkpoint) read every time."""
    checkpoint = spec.pretrainer.checkpoint
    path = folder / f"health-{checkpoint or 'final'}.json"
    measures = health.read_measures(path)
    if measures is None:
        measures = {}
        if weights is not None and pretrainer.produces is not None:
            dataset, prepared = ctx.data.get(spec.pool_dataset, spec.image_size, resize=pretrainer.pool_resize)
            pool = dataset.pretrain_pool()
            held_out = sorted(set(dataset.split("test")) - set(pool))  # never pre-trained on; labels unused
            with timing.stage("health probes"):
                measures = health.pretrain_measures(
                    pretrainer, backbone, weights, prepared.subset(pool).images, prepared.subset(held_out).images,
                    num_landmarks, spec.pretrain_seed, ctx.device, spec.health)
        health.write_measures(measures, path)
    curve = [r for r in results.read_pretrain_curve(folder / results.PRETRAIN_CURVE)
             if checkpoint is None or r["step"] <= checkpoint]
    chance = curve[-1]["chance"] if curve else None
    return {**measures, **health.curve_measures([r["loss"] for r in curve], chance, spec.health.curve_tail)}


def checked_result(name: str, pretrainer: Pretrainer, weights, saved: list[int]):
    """A training pretrainer's result, or an error saying what it should have produced."""
    if pretrainer.checkpoint_param is not None:
        missing = sorted(set(pretrainer.checkpoints()) - set(saved))
        if missing:
            raise PluginError(f"pretrainer {name!r} finished without saving checkpoint(s) {missing}: pass each to "
                              f"context.save_checkpoint(step, weights)")
        return weights
    if not isinstance(weights, dict) or not weights:
        raise PluginError(f"pretrainer {name!r} returned {type(weights).__name__ if weights is not None else 'nothing'}"
                          f" from pretrain(): a training pretrainer must return its weights as a state dict "
                          f"(name -> tensor)")
    return weights


def load_part(backbone: Backbone, model, pretrainer: Pretrainer, weights: dict) -> LoadReport:
    """Put the weights of the part ``pretrainer`` produces into ``model``, under the slot's prefix."""
    if pretrainer.produces is None:
        raise PluginError(f"pretrainer {pretrainer.name!r} returned weights but does not say what for: set its "
                          f"produces (\"detector\" for the whole network, or a part of the backbone's weight_slots)")
    slot = backbone.slot(pretrainer.produces)
    if slot is None:
        raise PluginError(pretrainer.incompatibility(backbone) or f"{backbone.name} has no slot for "
                                                                    f"{pretrainer.produces!r} weights")
    own = model.state_dict()
    if not any(slot.prefix + name in own for name in weights):
        expected = [n.removeprefix(slot.prefix) for n in own if n.startswith(slot.prefix)]
        raise PluginError(
            f"none of the {len(weights)} tensors pretrainer {pretrainer.name!r} returned for part {slot.part!r} "
            f"fit backbone {backbone.name!r}: it expects the part's own names, e.g. {', '.join(expected[:3])}; "
            f"got e.g. {', '.join(list(weights)[:3])}")
    return backbone.load_pretrained(model, {slot.prefix + name: tensor for name, tensor in weights.items()})



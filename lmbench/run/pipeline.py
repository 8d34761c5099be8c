"""One group of runs from data to result rows: pre-train (cached), fine-tune, score, assess health."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from lmbench.config.profiles import FinetuneConfig
from lmbench.config.specs import RunSpec
from lmbench.core.interfaces import Backbone, HeadStrategy, Pretrainer
from lmbench.detector import matching
from lmbench.detector import saved as detector
from lmbench.evaluate import health
from lmbench.run.context import RunContext, config_row, peak_memory_mb, provenance
from lmbench.run.pretrain import load_part, pretrain
from lmbench.run.scoring import score
from lmbench.run.splits import splits_of
from lmbench.store import cache, results
from lmbench.train import engine, timing


def execute(specs: list[RunSpec], ctx: RunContext, on_stage=lambda text, done, total: None) -> list[Outcome]:
    """Train once for runs sharing a ``training_key`` (one run, or members of a joint group) and
    return each one's outcome. Raises on failure."""
    with timing.recording() as seconds:
        return _execute(specs, ctx, on_stage, seconds)


def _execute(specs: list[RunSpec], ctx: RunContext, on_stage, seconds: dict[str, float]) -> list[Outcome]:
    start = time.perf_counter()
    lead = specs[0]
    members = lead.joint or (lead.dataset,)
    with timing.stage("data"):
        parts = [splits_of(lead, member, ctx, on_stage) for member in members]
    pretrainer: Pretrainer = lead.pretrainer.instantiate()
    backbone: Backbone = lead.backbone.instantiate()
    head: HeadStrategy = lead.head.instantiate()
    config = FinetuneConfig(**lead.finetune)
    counts = [part.dataset.num_landmarks for part in parts]

    on_stage("pre-training", 0, 1)
    torch.manual_seed(lead.pretrain_seed)
    with timing.stage("pre-training"):
        weights, cache_hit, pretrain_seconds, measures = pretrain(
            lead, pretrainer, backbone, counts[0], ctx, lambda done, total: on_stage("pre-training", done, total),
        )

    torch.manual_seed(lead.seed)
    with timing.stage("network"):  # built, and the pre-trained weights loaded into it
        model = backbone.build(counts if lead.joint else counts[0], lead.image_size)
        if weights is not None:
            try:
                load_part(backbone, model, pretrainer, weights)
            except Exception:
                if pretrainer.trains:  # weights that do not load are no finished pre-training
                    cache.forget(ctx.cache_dir, lead.pretrain_key)
                raise
    if head.fine_tunes:
        lr = config.lr if weights is not None else config.lr_scratch
        on_stage("fine-tuning", 0, config.epochs)
        trains, vals = [part.train for part in parts], [part.val for part in parts]
        with timing.stage("fine-tuning"):  # its training steps: the validation passes are a stage of their own
            fit = engine.finetune(
                model, head, trains if lead.joint else trains[0], vals if lead.joint else vals[0], config, lr,
                ctx.device, lead.seed,
                on_epoch=lambda epoch, total, tl, vl: on_stage(f"fine-tuning (val loss {vl:.4f})", epoch, total),
            )
    else:
        on_stage("fitting", 0, 1)
        with timing.stage("fitting"):
            fit, dense = fit_matching(lead, parts[0], backbone, model, head, counts[0], ctx)
        measures = {**measures, **dense}

    on_stage("testing", 0, 1)
    curves = [{"epoch": epoch, "train_loss": train, "val_loss": val, "lr": lr}
              for epoch, (train, val, lr) in enumerate(fit.history, start=1)]
    pretrain_curve = cache.entry(ctx.cache_dir, lead.pretrain_key) / results.PRETRAIN_CURVE
    if not results.intact(pretrain_curve, results.PRETRAIN_CURVE_SCHEMA, ctx.cache_dir):
        pretrain_curve = None  # shared by the group's runs
    outcomes = []
    for spec in specs:
        domain = members.index(spec.dataset)
        view = engine.DomainView(model, domain) if lead.joint else model
        data = parts[domain]
        with timing.stage("scoring"):  # metrics and prediction rows; the predicting itself is its own stage
            metrics, predictions, predicted_test, regions = score(spec, data, view, head, config, ctx, backbone)
        findings = (health.pretrain_findings(measures, spec.health)
                    + health.finetune_findings(fit.epochs, fit.best_epoch, predicted_test, spec.health))
        if not head.fine_tunes:
            findings += health.mean_shape_findings(results.overall_of(metrics, "val", "native"), data.train,
                                                   data.val, data.dataset.unit)
        save = detector.saver(model, head, counts if lead.joint else counts[0], domain if lead.joint else None,
                              data.dataset.landmark_names, spec.image_size, config.precision,
                              {"level": spec.conformal_level, "scale": regions["scale"].tolist()}) if spec.keeps_model else None
        wall = time.perf_counter() - start
        stages = {**seconds, "other": wall - sum(seconds.values())}  # what no stage covers: they add up
        row = {
            **config_row(spec), "status": "ok", "labelled_ids": json.dumps(data.labelled),
            "unit": data.dataset.unit, "thresholds": json.dumps(list(data.dataset.thresholds)),
            **provenance(ctx), "wall_time_s": wall, "pretrain_time_s": pretrain_seconds,
            "pretrain_cache_hit": cache_hit, "peak_memory_mb": peak_memory_mb(ctx.device),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "epochs": fit.epochs, "best_epoch": fit.best_epoch,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "excluded": json.dumps(data.dataset.excluded()), "model_saved": save is not None,
            "health": health.verdict(findings), "health_measures": json.dumps(measures, sort_keys=True),
            "stage_seconds": json.dumps({name: round(s, 3) for name, s in stages.items()}),
        }
        outcomes.append(Outcome(row, metrics, predictions, curves, save, pretrain_curve))
    return outcomes


def fit_matching(spec: RunSpec, data, backbone: Backbone, model, head, num_landmarks: int, ctx: RunContext):
    """A matching head fitted on the labelled training images (nothing else), and the dense
    collapse probe of the features it matches, against the same network freshly initialised.
    Returns a fine-tuning result of no epochs, and the probe's measures."""
    labelled = [data.dataset.load(i) for i in data.labelled]
    matching.fit(head, backbone, model, [s.image for s in labelled], [s.landmarks for s in labelled],
                 spec.image_size, ctx.device)
    with torch.random.fork_rng():
        torch.manual_seed(spec.pretrain_seed)
        fresh = backbone.build(num_landmarks, spec.image_size)
    probe = data.val.images[: spec.health.probe_images]
    with timing.stage("health probes"):
        dense = health.dense_measures(matching.encoder(backbone, model, ctx.device),
                                      matching.encoder(backbone, fresh, ctx.device), probe)
    return engine.FinetuneResult(epochs=0, best_epoch=0, best_val_loss=float("nan")), dense


@dataclass
class Outcome:
    """What one run leaves in the results folder."""

    row: dict
    metrics: list = field(default_factory=list)
    predictions: list = field(default_factory=list)
    curves: list = field(default_factory=list)
    save_model: Callable[[Path], None] | None = None
    pretrain_curve: Path | None = None  # the pre-training's curve in the cache, copied beside the results



"""Runs a matrix: each cell loads data, pre-trains (cached), fine-tunes, predicts and scores."""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import resource
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import lmbench
from lmbench.core.errors import CorruptFile, DataError, LmbenchError, PluginError, SkipRun
from lmbench.core.interfaces import Backbone, Dataset, HeadStrategy, LoadReport, PretrainContext, Pretrainer
from lmbench.core.keys import canonical_json, content_key
from lmbench.core.plugins import registry
from lmbench.run import cache, conformal, detector, distributed, engine, health, integrity, results, tensorfile, timing
from lmbench.run.data import Prepared, prepare
from lmbench.run.geometry import to_original
from lmbench.run.locks import file_lock
from lmbench.run.matrix import ComponentSpec, Matrix, RunSpec
from lmbench.run.metrics import radial_errors, summarize, summarize_regions
from lmbench.run.paper_eval import paper_errors
from lmbench.run.profiles import FinetuneConfig

Rerun = Literal["failed", "all"] | None
log = logging.getLogger("lmbench")


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(lmbench.__file__).parent,
            capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class DataCache:
    """Each dataset decoded and resized once: kept in memory for the process and on disk,
    keyed by its params (data root included) and the input size, for later processes."""

    def __init__(self, cache_dir: Path):
        self.folder = cache_dir / "data"
        self._entries: dict[str, tuple[Dataset, Prepared]] = {}

    def get(self, spec: ComponentSpec, size: int, on_progress=lambda done, total: None,
            resize: str = "antialiased") -> tuple[Dataset, Prepared]:
        identity = {"name": spec.name, "params": spec.params, "size": size}
        key = content_key(identity if resize == "antialiased" else {**identity, "resize": resize})
        if key not in self._entries:
            dataset = spec.instantiate()
            if missing := dataset.missing_attributes():
                raise PluginError(missing)
            path = self.folder / f"{spec.name}-{size}px-{key}{tensorfile.SUFFIX}"
            # held while decoding, so that parallel workers wait for one decode and read its file
            with file_lock(path.with_suffix(".lock")):
                prepared = self._read(path)
                if prepared is None:
                    ids = list(dict.fromkeys(dataset.split("train") + dataset.split("val") + dataset.split("test")))
                    prepared = prepare(dataset, ids, size, on_progress, resize)
                    tensorfile.save(path, *prepared.to_tensors())
            if len(self._entries) >= 2:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (dataset, prepared)
        return self._entries[key]

    def _read(self, path: Path) -> Prepared | None:
        """The decoded dataset at ``path``; None when absent or corrupt (set aside)."""
        if not path.exists():
            return None
        try:
            return Prepared.from_tensors(*tensorfile.load(path))
        except CorruptFile as exc:
            integrity.set_aside(path, self.folder.parent)
            log.warning("%s: set aside under %s; decoding the dataset again", exc,
                        self.folder.parent / integrity.CORRUPT)
            return None


@dataclass
class RunContext:
    """What one run needs beyond its spec, shared across the matrix."""

    cache_dir: Path
    device: torch.device = field(default_factory=pick_device)
    git_sha: str | None = field(default_factory=git_sha)
    nproc: int = 1  # processes per pre-training and node (data-parallel)
    nodes: int = 1  # nodes per pre-training (the SLURM job's, from its first node)

    def __post_init__(self):
        self.data = DataCache(self.cache_dir)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _provenance(ctx: RunContext) -> dict:
    """Where and how a run was computed; none of it changes its key."""
    cuda = ctx.device.type == "cuda"
    return {
        "device": str(ctx.device), "git_sha": ctx.git_sha,
        "device_name": torch.cuda.get_device_name(ctx.device) if cuda else platform.processor() or platform.machine(),
        "cuda_version": torch.version.cuda if cuda else None,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def _config_row(spec: RunSpec) -> dict:
    row = {
        "run_key": spec.run_key, "matrix": spec.matrix, "profile": spec.profile,
        "labels": spec.labels, "seed": spec.seed, "selection": spec.selection.label,
        "selection_params": canonical_json(spec.selection.params),
        "image_size": spec.image_size, "finetune": canonical_json(spec.finetune),
        "pretrain_key": spec.pretrain_key, "joint": spec.joint_label, "torch_version": torch.__version__,
        "lmbench_version": lmbench.__version__, "threads": spec.threads, "conformal_level": spec.conformal_level,
    }
    versions = {}
    for kind in ("dataset", "pretrainer", "backbone", "head"):
        component = getattr(spec, kind)
        row[kind], row[f"{kind}_label"] = component.name, component.label
        row[f"{kind}_params"] = canonical_json(component.params)
        try:
            plugin = registry().registration(kind, component.name).plugin
            versions[component.name] = f"{plugin.package}=={plugin.version}"
        except PluginError:
            pass
    row["plugin_versions"] = canonical_json(versions)
    return row


def _pretrain(spec: RunSpec, pretrainer: Pretrainer, backbone: Backbone, num_landmarks: int,
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
            weights = _pretrain_data_parallel(spec, pretrainer, images, num_landmarks, ctx, folder)
        else:
            weights = compute(images, save)
            results.write_pretrain_curve(spec.pretrain_key, curve, folder / results.PRETRAIN_CURVE)
        # every checkpoint on disk, those a killed run wrote before the state it resumed from among them
        saved = [step for step in pretrainer.checkpoints() if (folder / cache.weights_file(step)).exists()]
        return checked_result(spec.pretrainer.name, pretrainer, weights, saved)

    weights, hit, seconds = cache.cached(
        ctx.cache_dir, spec.pretrain_key, spec.pretrain_identity(), train_on_pool, spec.pretrainer.checkpoint
    )
    return weights, hit, seconds, _pretrain_health(spec, pretrainer, backbone, weights, num_landmarks, ctx, folder)


def _pretrain_data_parallel(spec: RunSpec, pretrainer: Pretrainer, images: torch.Tensor, num_landmarks: int,
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


def _pretrain_health(spec: RunSpec, pretrainer: Pretrainer, backbone: Backbone, weights, num_landmarks: int,
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


@dataclass
class Splits:
    """One dataset of a run: its labelled training subset, validation and test images."""

    dataset: Dataset
    labelled: list[str]
    train: Prepared
    val: Prepared
    test: Prepared


def _splits(spec: RunSpec, dataset_spec: ComponentSpec, ctx: RunContext, on_stage) -> Splits:
    dataset, prepared = ctx.data.get(dataset_spec, spec.image_size, lambda done, total: on_stage("loading", done, total))
    for split in ("train", "val", "test"):
        if not dataset.split(split):
            raise DataError(f"dataset {dataset_spec.label}: the {split} split is empty")
    labelled = select_labelled(spec, dataset.split("train"), prepared)
    train, val, test = (prepared.subset(ids) for ids in (labelled, dataset.split("val"), dataset.split("test")))
    return Splits(dataset, labelled, train, val, test)


def select_labelled(spec: RunSpec, train_ids: list[str], prepared: Prepared) -> list[str]:
    """The run's labelled subset of the training split, as its selector chooses it."""
    if spec.labels > len(train_ids):
        raise DataError(f"labels = {spec.labels} exceeds the {len(train_ids)} images of the training split")
    selector = spec.selection.instantiate()
    images = prepared.subset(train_ids).images
    chosen = selector.select(list(train_ids), images, spec.labels, spec.seed)
    if len(set(chosen)) != spec.labels or not set(chosen) <= set(train_ids):
        raise PluginError(f"selector {spec.selection.name!r} returned {len(set(chosen))} distinct training ids "
                          f"for labels = {spec.labels}; it must return that many of the ids it was given")
    return list(chosen)


def _score(spec: RunSpec, data: Splits, model, head: HeadStrategy, config: FinetuneConfig, ctx: RunContext):
    """Metric rows (native and paper evaluation) and prediction rows on the validation and test
    splits, and the conformal regions calibrated on the validation split. The validation
    split's numbers are for choosing settings (Figure 2's checkpoint, say), so that the test
    split is read once."""
    dataset = data.dataset
    if head.calibrates:
        with timing.stage("prediction"):
            logits = torch.cat([out.cpu() for out in engine.logits(model, data.val.images, config.eval_batch_size,
                                                                      ctx.device, config.precision)])
        head.calibrate(logits, data.val.landmarks)
    metrics, predictions = [], []
    names, regions = dataset.landmark_names, None
    for split, part in (("val", data.val), ("test", data.test)):
        with timing.stage("prediction"):  # the network and the head's decoding
            predicted_input, covariances = engine.predict(model, head, part.images, config.eval_batch_size, ctx.device,
                                                          config.precision)
        predicted_input = predicted_input.numpy()
        predicted = np.stack([to_original(p, shape, spec.image_size) for p, shape in zip(predicted_input, part.shapes)])
        errors = radial_errors(predicted, part.original_landmarks, part.spacings, dataset.unit)
        paper = paper_errors(dataset, predicted_input, part.original_landmarks, part.shapes, part.spacings,
                             spec.image_size)
        spreads = conformal.spreads_of(covariances.numpy(), part.shapes, spec.image_size,
                                       part.spacings if dataset.unit == "mm" else None)
        if regions is None:  # calibrated on the validation split, which comes first
            regions = conformal.calibrate(errors, spreads, spec.conformal_level)
        fixed, adaptive = conformal.radii(regions, spreads)
        rows = [("native", row) for row in summarize(errors, dataset.thresholds, names, dataset.failure_threshold)]
        rows += [("paper", row) for row in summarize(paper, dataset.thresholds, names, dataset.failure_threshold)]
        if split == "test":
            rows += [("native", row) for row in summarize_regions(errors, fixed, adaptive, names)]
        metrics += [
            {"split": split, "eval_mode": mode, "metric": metric, "landmark": landmark, "value": value,
             "unit": "%" if metric.startswith(("sdr", "failure", "coverage")) else dataset.unit}
            for mode, (metric, landmark, value) in rows
        ]
        predictions += [
            {"split": split, "image_id": image_id, "landmark_index": j, "landmark": name,
             "x": float(predicted[i, j, 0]), "y": float(predicted[i, j, 1]),
             "x_true": float(part.original_landmarks[i, j, 0]), "y_true": float(part.original_landmarks[i, j, 1]),
             "error": float(errors[i, j]), "unit": dataset.unit, "spread": float(spreads[i, j]),
             "radius": float(fixed[i, j]), "radius_adaptive": float(adaptive[i, j])}
            for i, image_id in enumerate(part.ids)
            for j, name in enumerate(names)
        ]
    return metrics, predictions, predicted_input, regions  # the test split's points, in input pixels


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
        parts = [_splits(lead, member, ctx, on_stage) for member in members]
    pretrainer: Pretrainer = lead.pretrainer.instantiate()
    backbone: Backbone = lead.backbone.instantiate()
    head: HeadStrategy = lead.head.instantiate()
    config = FinetuneConfig(**lead.finetune)
    counts = [part.dataset.num_landmarks for part in parts]

    on_stage("pre-training", 0, 1)
    torch.manual_seed(lead.pretrain_seed)
    with timing.stage("pre-training"):
        weights, cache_hit, pretrain_seconds, measures = _pretrain(
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
    lr = config.lr if weights is not None else config.lr_scratch
    on_stage("fine-tuning", 0, config.epochs)
    trains, vals = [part.train for part in parts], [part.val for part in parts]
    with timing.stage("fine-tuning"):  # its training steps: the validation passes are a stage of their own
        fit = engine.finetune(
            model, head, trains if lead.joint else trains[0], vals if lead.joint else vals[0], config, lr,
            ctx.device, lead.seed,
            on_epoch=lambda epoch, total, tl, vl: on_stage(f"fine-tuning (val loss {vl:.4f})", epoch, total),
        )

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
            metrics, predictions, predicted_test, regions = _score(spec, data, view, head, config, ctx)
        findings = (health.pretrain_findings(measures, spec.health)
                    + health.finetune_findings(fit.epochs, fit.best_epoch, predicted_test, spec.health))
        save = detector.saver(model, head, counts if lead.joint else counts[0], domain if lead.joint else None,
                              data.dataset.landmark_names, spec.image_size, config.precision,
                              {"level": spec.conformal_level, "scale": regions["scale"].tolist()}) if spec.keeps_model else None
        wall = time.perf_counter() - start
        stages = {**seconds, "other": wall - sum(seconds.values())}  # what no stage covers: they add up
        row = {
            **_config_row(spec), "status": "ok", "labelled_ids": json.dumps(data.labelled),
            "unit": data.dataset.unit, "thresholds": json.dumps(list(data.dataset.thresholds)),
            **_provenance(ctx), "wall_time_s": wall, "pretrain_time_s": pretrain_seconds,
            "pretrain_cache_hit": cache_hit, "peak_memory_mb": _peak_memory_mb(ctx.device),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "epochs": fit.epochs, "best_epoch": fit.best_epoch,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "excluded": json.dumps(data.dataset.excluded()), "model_saved": save is not None,
            "health": health.verdict(findings), "health_measures": json.dumps(measures, sort_keys=True),
            "stage_seconds": json.dumps({name: round(s, 3) for name, s in stages.items()}),
        }
        outcomes.append(Outcome(row, metrics, predictions, curves, save, pretrain_curve))
    return outcomes


@dataclass
class Outcome:
    """What one run leaves in the results folder."""

    row: dict
    metrics: list = field(default_factory=list)
    predictions: list = field(default_factory=list)
    curves: list = field(default_factory=list)
    save_model: Callable[[Path], None] | None = None
    pretrain_curve: Path | None = None  # the pre-training's curve in the cache, copied beside the results


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    busy: int = 0  # being run by another process at the same time
    seconds: float = 0.0
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # (status, title, error)

    @property
    def failures(self) -> list[tuple[str, str]]:
        return [(title, error) for status, title, error in self.notes if status == "failed"]

    @classmethod
    def lost(cls, group: list[RunSpec], why: str) -> Summary:
        """A group whose worker or job died before writing anything: a rerun redoes it."""
        return cls(failed=len(group), notes=[("failed", spec.title, why) for spec in group])

    def add(self, other: Summary) -> None:
        for name in ("ok", "failed", "skipped", "already_done", "busy"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.notes += other.notes


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, LmbenchError) else f"{type(exc).__name__}: {text}"


@dataclass
class GroupJob:
    """Runs one group of runs (a single run, or a joint group's members) wherever an executor
    puts it: in this process, a worker process or a cluster job. Picklable.

    Each group is claimed by a lock in the results folder first, so that processes sharing
    a matrix never do the same work twice; results already written meanwhile are skipped.
    """

    results_dir: Path
    cache_dir: Path
    redo: frozenset[str] = frozenset()  # statuses to run again
    device: str | None = None
    nproc: int = 1  # processes per pre-training and node
    nodes: int = 1  # nodes per pre-training (a SLURM job's, set by the submitit executor)

    def __call__(self, specs: list[RunSpec], on_stage=lambda text, done, total: None) -> Summary:
        summary = Summary()
        claim = self.results_dir / "claims" / f"{specs[0].training_key}.lock"
        with file_lock(claim, wait=False) as mine:
            if not mine:
                summary.busy = len(specs)
                return summary
            status = {s.run_key: results.status_of(self.results_dir, s.run_key) for s in specs}
            todo = [s for s in specs if status[s.run_key] is None or status[s.run_key] in self.redo]
            summary.already_done = len(specs) - len(todo)
            if todo:
                torch.set_num_threads(todo[0].threads)  # the same count on every executor: the same numbers
                summary.add(self._execute(todo, on_stage))
        return summary

    def context(self) -> RunContext:
        if getattr(self, "_context", None) is None:  # one per process: it holds the decoded datasets
            device = torch.device(self.device) if self.device else pick_device()
            self._context = RunContext(cache_dir=self.cache_dir, device=device, nproc=self.nproc, nodes=self.nodes)
        return self._context

    def __getstate__(self):
        return {k: v for k, v in vars(self).items() if k != "_context"}

    def _execute(self, specs: list[RunSpec], on_stage) -> Summary:
        ctx, summary = self.context(), Summary()
        stage = ["loading"]

        def track(text: str, done: int, total: int) -> None:
            stage[0] = text.split(" (")[0]
            on_stage(text, done, total)

        try:
            try:
                outcomes = execute(specs, ctx, track)
            except torch.cuda.OutOfMemoryError as exc:
                raise LmbenchError(out_of_memory(specs[0])) from exc
            summary.ok = len(specs)
        except Exception as exc:  # any failure is recorded and the matrix goes on
            status = "skipped" if isinstance(exc, SkipRun) else "failed"
            error = one_line(exc)
            outcomes = [Outcome({**_config_row(spec), **_provenance(ctx), "status": status, "error": error,
                                 "finished_at": datetime.now(UTC).isoformat(timespec="seconds")})
                        for spec in specs]
            setattr(summary, status, len(specs))
            for spec in specs:
                note = error
                if status == "failed":
                    log = self.results_dir / "logs" / f"{spec.run_key}.log"
                    log.parent.mkdir(parents=True, exist_ok=True)
                    log.write_text(traceback.format_exc())
                    where = f"run {spec.run_key}, {stage[0]}"
                    if stage[0] == "pre-training" and registry().get("pretrainer", spec.pretrainer.name).trains:
                        where += f", cache {ctx.cache_dir / 'pretrain' / spec.pretrain_key}"
                    note = f"{error} [{where}; log {log}]"
                summary.notes.append((status, spec.title, note))
        for outcome in outcomes:
            results.write_run(self.results_dir, outcome.row, outcome.metrics, outcome.predictions, outcome.curves,
                              outcome.save_model, outcome.pretrain_curve)
        return summary


def out_of_memory(spec: RunSpec) -> str:
    batch = spec.finetune["batch_size"]
    pretrainer_batch = spec.pretrainer.params.get("batch_size")
    also = f" or the pretrainer's batch_size ({pretrainer_batch})" if pretrainer_batch else ""
    return (f"out of GPU memory in profile {spec.profile!r} at {spec.image_size} px: lower the fine-tuning "
            f"batch_size ({batch}; raise accumulation to keep the effective batch), its eval_batch_size "
            f"({spec.finetune['eval_batch_size']}){also}, or use a smaller profile")


def pending_groups(matrix: Matrix, rerun: Rerun = None) -> tuple[list[list[RunSpec]], int]:
    """The runs still to do, grouped by what trains together, and how many are done already."""
    out = matrix.results_dir
    done = results.statuses(out) if out.exists() else {}
    redo = REDO.get(rerun, set())
    todo = [r for r in matrix.runs if r.run_key not in done or done[r.run_key] in redo]
    groups: dict[str, list[RunSpec]] = {}
    for spec in todo:
        groups.setdefault(spec.training_key, []).append(spec)
    return list(groups.values()), len(matrix.runs) - len(todo)


REDO = {"all": {"ok", "failed", "skipped"}, "failed": {"failed", "skipped"}}


class Tracker:
    """What executors report to: rich progress bars, and the failures as they come."""

    def __init__(self, progress: Progress, console: Console, quiet: bool, total: int, name: str):
        self.progress, self.console, self.quiet = progress, console, quiet
        self.overall = progress.add_task(f"matrix {name}", total=total)
        self._tasks: dict[str, object] = {}

    def started(self, specs: list[RunSpec]):
        """A group begins here; returns its on_stage callback."""
        title = specs[0].title
        task = self.progress.add_task(f"  {title}", total=1)
        self._tasks[specs[0].training_key] = task

        def on_stage(text: str, completed: int, total: int) -> None:
            self.progress.update(task, description=f"  {title}: {text}", completed=completed, total=total)

        return on_stage

    def finished(self, specs: list[RunSpec], summary: Summary) -> None:
        task = self._tasks.pop(specs[0].training_key, None)
        if task is not None:
            self.progress.remove_task(task)
        self.progress.advance(self.overall, len(specs))
        if not self.quiet:
            for status, title, error in summary.notes:
                self.console.print(f"[red]{status}[/red] {escape(title)}: {escape(error)}", soft_wrap=True)


def run_matrix(matrix: Matrix, rerun: Rerun = None, console: Console | None = None, quiet: bool = False,
               executor: str | None = None, nproc: int = 1) -> Summary:
    """Run every cell not already recorded (or as ``rerun`` says) through the matrix's executor
    (or ``executor``), each pre-training over ``nproc`` processes; a failing cell is recorded
    with its error and the matrix goes on."""
    console = console or Console()
    results.remove_leftovers(matrix.results_dir)
    integrity.remove(integrity.stale_temporaries(matrix.cache_dir), "temporary files")
    cache.remove_stopped(matrix.cache_dir)
    groups, already_done = pending_groups(matrix, rerun)
    spec = matrix.executor
    if executor not in (None, spec.name):  # another kind than the matrix's: its defaults
        spec = dataclasses.replace(spec, name=executor, label=executor, params={})
    runner = spec.instantiate()
    job = GroupJob(matrix.results_dir, matrix.cache_dir, frozenset(REDO.get(rerun, set())), nproc=nproc)
    start = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
        summary = runner.run(job, groups, Tracker(progress, console, quiet, sum(map(len, groups)), matrix.name))
    summary.already_done += already_done
    summary.seconds = time.perf_counter() - start
    return summary

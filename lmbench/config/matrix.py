"""Matrix files: parse and check a TOML matrix, expand it into runs, prune what cannot run."""

from __future__ import annotations

import dataclasses
import itertools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Interval, MaxLen

from lmbench.config.health import HealthSettings
from lmbench.config.profiles import PROFILES, FinetuneConfig
from lmbench.config.specs import DEFAULT_LEVEL, DEFAULT_THREADS, ComponentSpec, RunSpec
from lmbench.core import params as P
from lmbench.core.errors import LmbenchError, MatrixError
from lmbench.core.params import NonNegativeFloat, NonNegativeInt, PositiveInt
from lmbench.core.plugins import Registry, registry

SECTIONS = {"datasets": "dataset", "pretrainers": "pretrainer", "backbones": "backbone", "heads": "head"}
PATTERN_KEYS = {"dataset", "pretrainer", "backbone", "head", "labels", "seed", "selection"}


@dataclass
class JointGroup:
    """Datasets (labels of [[datasets]] entries) that one network trains on at once."""

    datasets: list[str]
    label: str = ""


@dataclass
class MatrixFile:
    """The top-level keys of a matrix, with their types and defaults."""

    name: str
    profile: Literal["smoke", "quick", "paper"] = "quick"
    seeds: Annotated[list[NonNegativeInt], MaxLen(1000)] = field(default_factory=lambda: [0])
    labels: Annotated[list[PositiveInt], MaxLen(1000)] = field(default_factory=lambda: [1, 5, 10, 25, 50])
    #: which training images get the labels: a selector's name, or a table with its name and
    #: params, or a list of them (one run per selection)
    selection: str | dict | list = "first"
    #: the coverage each landmark's uncertainty region is calibrated for (lmbench.evaluate.conformal)
    conformal_level: Annotated[float, Interval(gt=0, lt=1)] = DEFAULT_LEVEL
    image_size: Annotated[int, Interval(ge=32, le=4096)] | None = None  # None: the profile's
    #: seed of every pre-training, or "seed": one pre-training per fine-tuning seed, so that a
    #: sweep's spread over seeds includes pre-training's (the paper repeats the whole pipeline)
    pretrain_seed: NonNegativeInt | Literal["seed"] = 0
    output: str = "results"
    cache_dir: str | None = None
    save_models: bool = False  # keep every fine-tuned detector (models/<run_key>.safetensors); or per entry
    health: HealthSettings = field(default_factory=HealthSettings)  # thresholds of the health verdict
    #: seconds of pre-training between writes of the state a killed pre-training resumes from (0: every step)
    resume_every: NonNegativeFloat = 300.0
    #: torch's intra-op threads for every run, whichever executor runs it: the count changes
    #: CPU sums' order and so the numbers, so it is one setting, recorded, and keyed if not 2
    threads: Annotated[int, Interval(ge=1, le=1024)] = DEFAULT_THREADS
    finetune: dict = field(default_factory=dict)
    datasets: list[dict] = field(default_factory=list)
    pretrainers: list[dict] = field(default_factory=list)
    backbones: list[dict] = field(default_factory=list)
    heads: list[dict] = field(default_factory=list)
    joint: list[JointGroup] = field(default_factory=list)  # datasets trained on together
    executor: dict = field(default_factory=dict)  # kind = "local" | "pool" | "submitit" | ..., and its params
    include: list[dict] = field(default_factory=list)
    exclude: list[dict] = field(default_factory=list)


@dataclass
class Matrix:
    path: Path
    name: str
    profile: str
    output: Path
    cache_dir: Path
    runs: list[RunSpec]
    pruned: list[tuple[RunSpec, str]]
    executor: ComponentSpec

    @property
    def results_dir(self) -> Path:
        return self.output / self.name


def _expand_path(value: str) -> str:
    return os.path.expanduser(os.path.expandvars(value))


def _component(kind: str, table: Any, profile: str, reg: Registry, where: str, extra_keys=()) -> ComponentSpec:
    if not isinstance(table, dict):
        raise MatrixError(f"{where}: expected a table with 'name', got {table!r}")
    allowed = ["label", "name", "params", "save_models", *extra_keys]
    for key in table:
        if key not in allowed:
            raise P.unknown_key_error(key, sorted(allowed), where)
    name = P.coerce(table.get("name"), str, f"{where}.name")
    label = P.coerce(table.get("label", name), str, f"{where}.label")
    raw = P.coerce(table.get("params", {}), dict, f"{where}.params")
    try:
        cls = reg.get(kind, name)
    except LmbenchError as exc:
        raise MatrixError(f"{where}.name: {exc}") from None
    if kind == "pretrainer" and cls.trains and cls.produces is None:
        raise MatrixError(f"{where}.name: pretrainer {name!r} trains but declares no `produces`: set it to the part "
                          f"its weights are for (\"detector\" for a backbone's whole network, or one of its weight slots)")
    values = {**cls.profile_defaults.get(profile, {}), **raw}
    built = P.build(cls.Params, values, f"{where}.params")
    params = P.plain(dataclasses.asdict(built))  # Path params expanded (P.coerce), kept as strings
    for key in cls.unkeyed_params:
        if isinstance(params.get(key), str):
            params[key] = _expand_path(params[key])
    keyed = {k: v for k, v in params.items() if k not in cls.unkeyed_params}
    checkpoint = None
    if kind == "pretrainer" and cls.checkpoint_param:
        checkpoint = keyed.pop(cls.checkpoint_param)
        try:
            component = cls(built)
            component.name = name
            keyed["checkpoints"] = component.checkpoints()
        except LmbenchError as exc:
            raise MatrixError(f"{where}.params: {exc}") from None
    save_models = P.coerce(table.get("save_models", False), bool, f"{where}.save_models")
    finetune = P.coerce(table.get("finetune", {}), dict, f"{where}.finetune")
    if finetune:
        P.build(FinetuneConfig, finetune, f"{where}.finetune")
    return ComponentSpec(kind, name, label, params, keyed, checkpoint, reg.code_version(kind, name), save_models,
                         finetune)


def _matches(pattern: dict[str, Any], run: RunSpec, labels: dict[str, set[str]]) -> bool:
    """Whether ``run`` fits every key of ``pattern``. A component value is one entry's label,
    matching that entry alone ("smp-unet" is not "smp-unet lite0"), or else a plugin's name,
    matching each of its entries."""
    for key, wanted in pattern.items():
        wanted = wanted if isinstance(wanted, list) else [wanted]
        if key in ("labels", "seed"):
            if getattr(run, key) not in wanted:
                return False
        else:
            spec: ComponentSpec = getattr(run, key)
            if not any(spec.label == w if w in labels[key] else spec.name == w for w in wanted):
                return False
    return True


def _check_patterns(patterns: list[dict], where: str, names: dict[str, set[str]]) -> None:
    """Each pattern a table of known keys whose component values name an entry (its label) or
    a plugin of one: a value that matches nothing is a typo, said now."""
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, dict) or not pattern:
            raise MatrixError(f"{where}[{i}]: expected a non-empty table of {', '.join(sorted(PATTERN_KEYS))}")
        for key, wanted in pattern.items():
            if key not in PATTERN_KEYS:
                raise P.unknown_key_error(key, sorted(PATTERN_KEYS), f"{where}[{i}]")
            for value in (wanted if isinstance(wanted, list) else [wanted]):
                if key in names and value not in names[key]:
                    raise MatrixError(f"{where}[{i}].{key}: {value!r} is no {key}'s label or name in this matrix; "
                                      f"known: {', '.join(sorted(names[key]))}")


def parse_matrix(data: dict[str, Any], path: Path, reg: Registry | None = None) -> Matrix:
    """Check a parsed matrix and expand it. Errors name the file and the key."""
    reg = reg or registry()
    where = str(path)
    if "name" not in data:
        data = {**data, "name": path.stem}
    top = P.build(MatrixFile, data, where)
    if top.name in ("", ".", "..") or any(ch in top.name for ch in "/\\\0"):
        raise MatrixError(f"{where}.name: {top.name!r} is not a folder name (it names the results folder under "
                          f"output): no slashes, not . or ..")
    for key in ("labels", "seeds"):
        if not getattr(top, key):
            raise MatrixError(f"{where}.{key}: must list at least one value")
    profile = PROFILES[top.profile]
    P.build(FinetuneConfig, {**profile.finetune, **top.finetune}, f"{where}.finetune")  # checked once, here
    image_size = top.image_size if top.image_size is not None else profile.image_size

    def finetune(dataset: ComponentSpec, backbone: ComponentSpec) -> dict[str, Any]:
        """Profile, what the dataset and backbone bring, the matrix's [finetune], then the
        dataset's and the backbone's entries' own ``finetune`` tables."""
        brought = {}
        for spec in (dataset, backbone):
            cls = reg.get(spec.kind, spec.name)
            brought.update(cls.finetune_defaults(P.build(cls.Params, spec.params, f"{spec.kind} {spec.label}")))
        values = {**profile.finetune, **brought, **top.finetune, **dataset.finetune, **backbone.finetune}
        return dataclasses.asdict(P.build(FinetuneConfig, values, f"{where}.finetune ({dataset.label}, {backbone.label})"))

    sections: dict[str, list[ComponentSpec]] = {}
    for section, kind in SECTIONS.items():
        tables = getattr(top, section)
        if not tables:
            raise MatrixError(f"{where}: [[{section}]] must list at least one {kind}")
        extra = {"pretrainer": ("dataset",), "dataset": ("finetune",), "backbone": ("finetune",)}.get(kind, ())
        specs = [
            _component(kind, t, top.profile, reg, f"{where}.{section}[{i}]", extra) for i, t in enumerate(tables)
        ]
        labels = [s.label for s in specs]
        for i, spec in enumerate(specs):
            if spec.label in labels[:i]:
                raise MatrixError(
                    f"{where}.{section}[{i}]: {spec.label!r} appears twice; give each a distinct 'label'"
                )
        sections[section] = specs
    pools = {
        spec.label: _component("dataset", table["dataset"], top.profile, reg, f"{where}.pretrainers[{i}].dataset")
        for i, (spec, table) in enumerate(zip(sections["pretrainers"], top.pretrainers))
        if "dataset" in table
    }

    by_label = {d.label: d for d in sections["datasets"]}
    groups: list[tuple[tuple[ComponentSpec, ...], str | None]] = [((d,), None) for d in sections["datasets"]]
    for i, group in enumerate(top.joint):
        where_group = f"{where}.joint[{i}]"
        if len(group.datasets) < 2 or len(set(group.datasets)) < len(group.datasets):
            raise MatrixError(f"{where_group}.datasets: name two or more distinct [[datasets]] labels")
        for label in group.datasets:
            if label not in by_label:
                raise MatrixError(f"{where_group}.datasets: no [[datasets]] entry is labelled {label!r}; "
                                  f"known: {', '.join(sorted(by_label))}")
        groups.append((tuple(by_label[label] for label in group.datasets), group.label or "+".join(group.datasets)))

    chosen = top.selection if isinstance(top.selection, list) else [top.selection]
    selections = [_component("selector", {"name": s} if isinstance(s, str) else s, top.profile, reg,
                             f"{where}.selection" + (f"[{i}]" if isinstance(top.selection, list) else ""))
                  for i, s in enumerate(chosen)]
    if not selections:
        raise MatrixError(f"{where}.selection: must list at least one selector")
    names = [s.label for s in selections]
    if len(set(names)) < len(names):
        raise MatrixError(f"{where}.selection: a selector appears twice; give each a distinct 'label'")
    entries = {kind: sections[section] for section, kind in SECTIONS.items()} | {"selection": selections}
    entry_labels = {kind: {s.label for s in specs} for kind, specs in entries.items()}
    known = {kind: entry_labels[kind] | {s.name for s in specs} for kind, specs in entries.items()}
    _check_patterns(top.include, f"{where}.include", known)
    _check_patterns(top.exclude, f"{where}.exclude", known)
    finetunes = {(d.label, b.label): finetune(d, b) for d in sections["datasets"] for b in sections["backbones"]}
    runs: list[RunSpec] = []
    pruned: list[tuple[RunSpec, str]] = []
    instances = {}
    for (members, joint_label), pretrainer, backbone, head, labels, seed, selection in itertools.product(
        groups, sections["pretrainers"], sections["backbones"], sections["heads"], top.labels, top.seeds, selections,
    ):
        for dataset in members:
            run = RunSpec(
                matrix=top.name, profile=top.profile, dataset=dataset, pretrainer=pretrainer,
                backbone=backbone, head=head, labels=labels, seed=seed, selection=selection,
                image_size=image_size, pretrain_seed=seed if top.pretrain_seed == "seed" else top.pretrain_seed,
                finetune=finetunes[(members[0].label, backbone.label)], pretrain_dataset=pools.get(pretrainer.label),
                joint=members if joint_label else (), joint_label=joint_label, save_models=top.save_models,
                health=top.health, resume_every=top.resume_every, threads=top.threads,
                conformal_level=top.conformal_level,
            )
            reason = _incompatibility(run, instances, reg)
            if reason is None:
                excluded = [i for i, p in enumerate(top.exclude) if _matches(p, run, entry_labels)]
                if excluded:
                    reason = f"matches exclude[{excluded[0]}]"
                elif top.include and not any(_matches(p, run, entry_labels) for p in top.include):
                    reason = "matches no include"
            if reason is None:
                runs.append(run)
            else:
                pruned.append((run, reason))

    settings = dict(top.executor)
    kind = P.coerce(settings.pop("kind", "local"), str, f"{where}.executor.kind")
    executor = _component("executor", {"name": kind, "params": settings}, top.profile, reg, f"{where}.executor")
    cache_dir = Path(_expand_path(top.cache_dir)) if top.cache_dir else default_cache_dir()
    return Matrix(path, top.name, top.profile, Path(_expand_path(top.output)), cache_dir, runs, pruned, executor)


def _incompatibility(run: RunSpec, instances: dict, reg: Registry) -> str | None:
    """Why a run cannot be done, or None; plugins are instantiated once per label."""
    for spec in (run.pretrainer, run.backbone, run.head):
        if (spec.kind, spec.label) not in instances:
            instances[spec.kind, spec.label] = spec.instantiate(reg)
    pretrainer, backbone = instances["pretrainer", run.pretrainer.label], instances["backbone", run.backbone.label]
    head = instances["head", run.head.label]
    if run.joint and not backbone.joint_training:
        return f"{run.backbone.label} trains on one dataset at a time"
    if run.joint and pretrainer.trains:
        return "mixed-dataset runs start from no pre-training or fixed weights"
    if run.joint and not head.fine_tunes:
        return f"{run.head.label} fits one dataset's labelled images; mixed-dataset runs fine-tune"
    return pretrainer.incompatibility(backbone) or head.incompatibility(backbone)



def default_cache_dir() -> Path:
    return Path(os.environ.get("LMBENCH_CACHE_DIR") or Path.home() / ".cache" / "lmbench")


def load_matrix(path: str | Path, reg: Registry | None = None) -> Matrix:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MatrixError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    except OSError as exc:
        raise MatrixError(f"{path}: cannot read matrix: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path}: invalid TOML: {exc}") from None
    return parse_matrix(data, path, reg)


def labels_beyond_data(m: Matrix) -> tuple[list[str], list[str]]:
    """Runs asking for more labels than their dataset's training split holds, and the datasets
    whose split could not be counted here (their data absent: checked again when they run)."""
    counts: dict[str, int | None] = {}
    uncounted = []
    for spec in {run.dataset.label: run.dataset for run in m.runs}.values():
        try:
            counts[spec.label] = len(spec.instantiate().split("train"))
        except (LmbenchError, OSError) as exc:
            counts[spec.label] = None
            uncounted.append(f"dataset {spec.label}: training split not counted ({exc})")
    beyond = [f"{run.dataset.label} | {run.pretrainer.label} | {run.labels} labels: more than the "
              f"{counts[run.dataset.label]} images of its training split" for run in m.runs
              if counts[run.dataset.label] is not None and run.labels > counts[run.dataset.label]]
    return beyond, uncounted

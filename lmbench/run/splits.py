"""A run's data: the labelled training subset its selector chooses, the validation and test images."""

from __future__ import annotations

from dataclasses import dataclass

from lmbench.config.specs import ComponentSpec, RunSpec
from lmbench.core.errors import DataError, PluginError
from lmbench.core.interfaces import Dataset
from lmbench.data.prepare import Prepared
from lmbench.run.context import RunContext


@dataclass
class Splits:
    """One dataset of a run: its labelled training subset, validation and test images."""

    dataset: Dataset
    labelled: list[str]
    train: Prepared
    val: Prepared
    test: Prepared


def splits_of(spec: RunSpec, dataset_spec: ComponentSpec, ctx: RunContext, on_stage) -> Splits:
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


"""A matrix's cells as plain data: each component as configured, and each run with the keys
that identify its work (``run_key``, ``pretrain_key``). Read by everything that runs or
reports a matrix; the parser (``matrix``) makes them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lmbench.config.health import HealthSettings
from lmbench.core import params as P
from lmbench.core.keys import content_key
from lmbench.core.plugins import Registry, registry

DEFAULT_THREADS = 2
DEFAULT_LEVEL = 0.9  # of the conformal uncertainty regions
NAMED_SELECTIONS = ("first", "random")  # keyed by name alone, as before selectors had params


@dataclass(frozen=True)
class ComponentSpec:
    """One plugin as configured in a matrix, with every param resolved."""

    kind: str
    name: str
    label: str
    params: dict[str, Any]  # all params, as given to the plugin
    keyed: dict[str, Any]  # the params that change the numbers
    checkpoint: int | None = None  # for pretrainers whose runs keep several checkpoints
    code: str = ""  # the plugin's distribution and version, or a hash of its source (Registry.code_version)
    save_models: bool = False  # keep the detectors of the runs using this entry (changes no numbers)
    finetune: dict[str, Any] = dataclasses.field(default_factory=dict)  # a dataset's or backbone's entry's overrides

    def identity(self) -> dict[str, Any]:
        """What identifies the component's work: its code and params; for a checkpointing
        pretrainer, the shared training run (its checkpoint param left out)."""
        return {"name": self.name, "params": self.keyed, "code": self.code}

    def instantiate(self, reg: Registry | None = None):
        cls = (reg or registry()).get(self.kind, self.name)
        component = cls(P.build(cls.Params, self.params, f"{self.kind} {self.label}"))
        component.name = self.name
        return component


@dataclass(frozen=True)
class RunSpec:
    """One cell of a matrix: everything needed to run it and to key its result."""

    matrix: str
    profile: str
    dataset: ComponentSpec
    pretrainer: ComponentSpec
    backbone: ComponentSpec
    head: ComponentSpec
    labels: int
    seed: int
    selection: ComponentSpec
    image_size: int
    pretrain_seed: int
    finetune: dict[str, Any]
    pretrain_dataset: ComponentSpec | None = None  # pre-train on another dataset's images
    #: for mixed-dataset training: every dataset the network trains on (``dataset`` among them,
    #: the one this run scores), and the group's label
    joint: tuple[ComponentSpec, ...] = ()
    joint_label: str | None = None
    save_models: bool = False  # keep the fine-tuned detector beside the results
    health: HealthSettings = HealthSettings()  # the verdict's thresholds: never part of a key
    resume_every: float = 300.0  # seconds between resume states of a pre-training: never part of a key
    threads: int = DEFAULT_THREADS  # torch's intra-op threads: part of every key where not the default
    conformal_level: float = DEFAULT_LEVEL  # part of every key where not the default

    @property
    def keeps_model(self) -> bool:
        return self.save_models or any(s.save_models for s in (self.dataset, self.pretrainer, self.backbone, self.head))

    @property
    def pool_dataset(self) -> ComponentSpec:
        """The dataset whose unlabeled images pre-training sees."""
        return self.pretrain_dataset or self.dataset

    def pretrain_identity(self) -> dict[str, Any]:
        """What the pre-trained weights depend on: not the head, labels or fine-tuning seed."""
        identity = {
            "pretrainer": self.pretrainer.identity(),
            "backbone": self.backbone.identity(),
            "dataset": self.pool_dataset.identity(),
            "image_size": self.image_size,
            "seed": self.pretrain_seed,
        }
        if self.threads != DEFAULT_THREADS:  # keys of the default stay those computed before it was a setting
            identity["threads"] = self.threads
        return identity

    @property
    def pretrain_key(self) -> str:
        return content_key(self.pretrain_identity())

    @property
    def run_key(self) -> str:
        identity = {
            "pretrain": self.pretrain_identity(),
            "head": self.head.identity(),
            "labels": self.labels,
            "seed": self.seed,
            "selection": self.selection.name if self.selection.name in NAMED_SELECTIONS else self.selection.identity(),
            "finetune": self.finetune,
        }
        if self.conformal_level != DEFAULT_LEVEL:
            identity["conformal_level"] = self.conformal_level
        if self.pretrainer.checkpoint is not None:
            identity["checkpoint"] = self.pretrainer.checkpoint
        if self.joint:
            identity["joint"] = [d.identity() for d in self.joint]
        return content_key(identity)

    @property
    def training_key(self) -> str:
        """Runs with the same training_key share one fine-tuned network: the members of a joint group."""
        if not self.joint:
            return self.run_key
        return content_key({"joint": self.joint_label, "run": dataclasses.replace(self, dataset=self.joint[0]).run_key})

    @property
    def title(self) -> str:
        joint = f" (joint {self.joint_label})" if self.joint else ""
        return (
            f"{self.dataset.label}{joint} | {self.pretrainer.label} | {self.backbone.label} | "
            f"{self.head.label} | {self.labels}{'' if self.selection.name == 'first' else ' ' + self.selection.label} "
            f"labels | seed {self.seed}"
        )

"""Where a run is computed and what identifies it: the device, the provenance and the config columns of its row."""

from __future__ import annotations

import platform
import resource
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch

import lmbench
from lmbench.config.specs import RunSpec
from lmbench.core.errors import PluginError
from lmbench.core.keys import canonical_json
from lmbench.core.plugins import registry
from lmbench.data.decoded import DataCache


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


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def provenance(ctx: RunContext) -> dict:
    """Where and how a run was computed; none of it changes its key."""
    cuda = ctx.device.type == "cuda"
    return {
        "device": str(ctx.device), "git_sha": ctx.git_sha,
        "device_name": torch.cuda.get_device_name(ctx.device) if cuda else platform.processor() or platform.machine(),
        "cuda_version": torch.version.cuda if cuda else None,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def config_row(spec: RunSpec) -> dict:
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



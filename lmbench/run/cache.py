"""Pre-trained weights cached by pretrain key, shared by every head, label count and seed.

``<cache>/pretrain/<key>/weights.pt`` (or ``checkpoint-N.pt``) is written first and the
``COMPLETE`` marker last, with the sha256 of every weights file: an interrupted pre-training
is never mistaken for a finished one, and a file corrupted or truncated since is detected,
reported and trained again. A lock per key makes concurrent processes wanting the same
pre-training wait for the one doing it, then read its result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lmbench.run.locks import file_lock

log = logging.getLogger("lmbench")

MARKER = "COMPLETE"


def save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def entry(cache_dir: Path, key: str) -> Path:
    """The folder of one pre-training in the cache."""
    return cache_dir / "pretrain" / key


def cached(
    cache_dir: Path,
    key: str,
    identity: dict,
    train: Callable[[Callable[[int, dict], None]], dict[str, torch.Tensor] | None],
    checkpoint: int | None = None,
) -> tuple[dict[str, torch.Tensor] | None, bool, float]:
    """(weights, cache hit, seconds spent training) for ``key``, training on a miss.

    ``train(save)`` returns the final weights, or passes each checkpoint of a run that keeps
    several to ``save(step, weights)``; ``checkpoint`` picks the one returned.
    """
    folder = entry(cache_dir, key)
    name = "weights.pt" if checkpoint is None else f"checkpoint-{checkpoint}.pt"
    with file_lock(cache_dir / "pretrain" / f"{key}.lock"):
        if (folder / MARKER).exists():
            if _intact(folder, name):
                return torch.load(folder / name, map_location="cpu", weights_only=True), True, 0.0
            log.warning("pre-trained weights %s failed their checksum: pre-training again", folder / name)
            (folder / MARKER).unlink()

        def save(step: int, weights: dict) -> None:
            save_atomic({k: v.detach().cpu() for k, v in weights.items()}, folder / f"checkpoint-{step}.pt")

        start = time.perf_counter()
        weights = train(save)
        seconds = time.perf_counter() - start
        if checkpoint is None:
            save_atomic(weights, folder / name)
        (folder / "identity.json").write_text(json.dumps(identity, indent=2, sort_keys=True))
        sums = {p.name: _sha256(p) for p in sorted(folder.glob("*.pt"))}
        (folder / MARKER).write_text(json.dumps({"seconds": round(seconds, 3), "sha256": sums}, indent=2))
        return torch.load(folder / name, map_location="cpu", weights_only=True), False, seconds


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _intact(folder: Path, name: str) -> bool:
    """Whether ``name`` exists with the checksum its marker recorded (markers from before
    checksums were recorded are trusted)."""
    if not (folder / name).exists():
        return False
    try:
        sums = json.loads((folder / MARKER).read_text())["sha256"]
    except (ValueError, KeyError, TypeError):
        return True
    return name in sums and sums[name] == _sha256(folder / name)

"""Pre-trained weights cached by pretrain key, shared by every head, label count and seed.

``<cache>/pretrain/<key>/weights.safetensors`` (or ``checkpoint-N.safetensors``) is written
first and the ``COMPLETE`` marker last, with the sha256 of every weights file: an interrupted
pre-training is never mistaken for a finished one, and a file corrupted, truncated or
replaced since (by a pickle, say, which is never read) is detected, reported and trained
again. A lock per key makes concurrent processes wanting the same
pre-training wait for the one doing it, then read its result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lmbench.run import tensorfile
from lmbench.run.locks import file_lock

log = logging.getLogger("lmbench")

MARKER = "COMPLETE"
#: the state an interrupted pre-training resumes from (``train_steps``), removed once it is complete
RESUME = f"resume{tensorfile.SUFFIX}"


def weights_file(checkpoint: int | None) -> str:
    return f"weights{tensorfile.SUFFIX}" if checkpoint is None else f"checkpoint-{checkpoint}{tensorfile.SUFFIX}"


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
    name = weights_file(checkpoint)
    with file_lock(cache_dir / "pretrain" / f"{key}.lock"):
        if (folder / MARKER).exists():
            if _intact(folder, name):
                try:
                    return tensorfile.load(folder / name)[0], True, 0.0
                except tensorfile.ForeignFile as exc:
                    log.warning("%s: pre-training again", exc)
            else:
                log.warning("pre-trained weights %s failed their checksum: pre-training again", folder / name)
            (folder / MARKER).unlink()

        def save(step: int, weights: dict) -> None:
            tensorfile.save(folder / weights_file(step), weights)

        start = time.perf_counter()
        weights = train(save)
        seconds = time.perf_counter() - start
        if checkpoint is None:
            tensorfile.save(folder / name, weights)
        (folder / "identity.json").write_text(json.dumps(identity, indent=2, sort_keys=True))
        sums = {p.name: _sha256(p) for p in sorted(folder.glob(f"*{tensorfile.SUFFIX}")) if p.name != RESUME}
        (folder / MARKER).write_text(json.dumps({"seconds": round(seconds, 3), "sha256": sums}, indent=2))
        (folder / RESUME).unlink(missing_ok=True)
        return tensorfile.load(folder / name)[0], False, seconds


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

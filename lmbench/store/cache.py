"""Pre-trained weights cached by pretrain key, shared by every head, label count and seed.

``<cache>/pretrain/<key>/weights.safetensors`` (or ``checkpoint-N.safetensors``) is written
first and the ``COMPLETE`` marker last: an interrupted pre-training is never mistaken for a
finished one. A weights file corrupted, truncated or replaced since (by a pickle, say, which
is never read) fails its checksum on reading: it is set aside, reported and trained again.
A lock per key makes concurrent processes wanting the same
pre-training wait for the one doing it, then read its result.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lmbench.core.errors import CorruptFile
from lmbench.store import integrity, layout, tensorfile
from lmbench.store.locks import file_lock

log = logging.getLogger("lmbench")

MARKER = "COMPLETE"
#: the state an interrupted pre-training resumes from (``train_steps``), removed once it is complete
RESUME = f"resume{tensorfile.SUFFIX}"


def weights_file(checkpoint: int | None) -> str:
    return f"weights{tensorfile.SUFFIX}" if checkpoint is None else f"checkpoint-{checkpoint}{tensorfile.SUFFIX}"


def entry(cache_dir: Path, key: str) -> Path:
    """The folder of one pre-training in the cache."""
    return layout.pretrain_entry(cache_dir, key)


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
    with file_lock(layout.pretrain_lock(cache_dir, key)):
        if (folder / MARKER).exists():
            try:
                return tensorfile.load(folder / name)[0], True, 0.0
            except FileNotFoundError:
                log.warning("pre-trained weights %s are missing: pre-training again", folder / name)
            except CorruptFile as exc:
                integrity.set_aside(folder / name, cache_dir)
                log.warning("%s: set aside under %s; pre-training again", exc, cache_dir / integrity.CORRUPT)
            (folder / MARKER).unlink()

        def save(step: int, weights: dict) -> None:
            tensorfile.save(folder / weights_file(step), weights)

        start = time.perf_counter()
        weights = train(save)
        seconds = time.perf_counter() - start
        if checkpoint is None:
            tensorfile.save(folder / name, weights)
        integrity.write_text(folder / "identity.json", json.dumps(identity, indent=2, sort_keys=True))
        integrity.write_text(folder / MARKER, json.dumps({"seconds": round(seconds, 3)}, indent=2))
        (folder / RESUME).unlink(missing_ok=True)
        return tensorfile.load(folder / name)[0], False, seconds



def forget(cache_dir: Path, key: str) -> None:
    """Mark a cached pre-training incomplete (its weights do not load, say), so that the next
    run trains it again; its files stay until then."""
    with file_lock(layout.pretrain_lock(cache_dir, key)):
        (entry(cache_dir, key) / MARKER).unlink(missing_ok=True)


def remove_stopped(cache_dir: Path) -> None:
    """Delete the checkpoints of pre-trainings killed before they wrote a state to resume
    from: a new attempt starts from zero and writes them again."""
    for lock in sorted((cache_dir / layout.PRETRAIN).glob("*.lock")):
        folder = lock.with_suffix("")
        with file_lock(lock, wait=False) as mine:  # a pre-training holds it while it runs
            if mine and folder.is_dir() and not (folder / MARKER).exists() and not (folder / RESUME).exists():
                integrity.remove(sorted(folder.glob(f"checkpoint-*{tensorfile.SUFFIX}")), "checkpoints")

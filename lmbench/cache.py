"""Pre-trained weights cached by pretrain key, shared by every head, label count and seed.

``<cache>/pretrain/<key>/weights.pt`` is written first and the ``COMPLETE`` marker last, so
an interrupted pre-training is never mistaken for a finished one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

MARKER = "COMPLETE"


def save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    folder = cache_dir / "pretrain" / key
    name = "weights.pt" if checkpoint is None else f"checkpoint-{checkpoint}.pt"
    if (folder / MARKER).exists():
        return torch.load(folder / name, map_location="cpu", weights_only=True), True, 0.0

    def save(step: int, weights: dict) -> None:
        save_atomic({k: v.detach().cpu() for k, v in weights.items()}, folder / f"checkpoint-{step}.pt")

    start = time.perf_counter()
    weights = train(save)
    seconds = time.perf_counter() - start
    if checkpoint is None:
        save_atomic(weights, folder / name)
    elif not (folder / name).exists():
        raise RuntimeError(f"pre-training finished without writing checkpoint {checkpoint}")
    (folder / "identity.json").write_text(json.dumps(identity, indent=2, sort_keys=True))
    (folder / MARKER).write_text(f"{seconds:.3f} s\n")
    return torch.load(folder / name, map_location="cpu", weights_only=True), False, seconds

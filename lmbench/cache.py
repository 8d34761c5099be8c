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
    cache_dir: Path, key: str, identity: dict, compute: Callable[[], dict[str, torch.Tensor] | None]
) -> tuple[dict[str, torch.Tensor] | None, bool, float]:
    """(weights, cache hit, seconds spent computing) for ``key``, computing them on a miss."""
    folder = cache_dir / "pretrain" / key
    if (folder / MARKER).exists():
        return torch.load(folder / "weights.pt", map_location="cpu", weights_only=True), True, 0.0
    start = time.perf_counter()
    weights = compute()
    seconds = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    save_atomic(weights, folder / "weights.pt")
    (folder / "identity.json").write_text(json.dumps(identity, indent=2, sort_keys=True))
    (folder / MARKER).write_text(f"{seconds:.3f} s\n")
    return weights, False, seconds

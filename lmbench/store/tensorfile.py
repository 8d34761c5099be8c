"""The one format lmbench writes tensors in: safetensors, with JSON for what is not a tensor.

A file another process wrote (a shared results folder, a cache someone handed over) must not
be able to run code when it is read, so nothing lmbench reads back is a pickle: every
tensor file is a safetensors file whose metadata holds one JSON document under ``"lmbench"``
and the sha256 of its tensors under ``"sha256"``. Reading checks the format and the checksum
and refuses anything else in one line that says what the file is; callers decide whether to
recompute (caches, set aside first) or to tell the user how to redo it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lmbench.core.errors import CorruptFile
from lmbench.store import integrity

SUFFIX = ".safetensors"
_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"


def checksum(tensors: dict[str, torch.Tensor], meta: str = "") -> str:
    """sha256 over the JSON metadata, then every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256(meta.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> None:
    """Write ``tensors`` and the JSON-able ``meta`` atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # own contiguous copies: safetensors refuses tensors sharing memory (tied weights, views)
    plain = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in tensors.items()}
    text = json.dumps(meta or {})
    with integrity.replacing(path) as tmp:
        save_file(plain, tmp, metadata={"lmbench": text, "sha256": checksum(plain, text)})


def describe(path: Path) -> str:
    """What a file that is not in lmbench's format looks like, for the one-line refusal."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(_ZIP):
        return "a torch.save archive (a pickle, which can run code when read)"
    if head.startswith(_PICKLE):
        return "a pickle (which can run code when read)"
    if not head:
        return "empty"
    return "not a safetensors file (truncated or another format)"


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a file ``save`` wrote; ``CorruptFile`` naming the file otherwise."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        meta = json.loads(metadata["lmbench"])
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        what = describe(path) if path.exists() else "missing"
        raise CorruptFile(f"{path}: {what}; lmbench reads only the safetensors files it writes") from exc
    if "sha256" not in metadata:  # a file without its digest cannot be told from an edited one
        raise CorruptFile(f"{path}: carries no checksum, so it cannot be verified; lmbench reads only files it "
                          f"wrote itself")
    if checksum(tensors, metadata["lmbench"]) != metadata["sha256"]:
        raise CorruptFile(f"{path}: corrupt (its tensors or metadata do not match the checksum written with them)")
    return tensors, meta


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file lmbench wrote (a pre-training checkpoint, say)."""
    return load(Path(path))[0]

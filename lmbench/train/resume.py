"""A training loop's whole state in one file, so that a killed pre-training goes on where it
stopped and ends with the same weights, bit for bit, as one that never stopped.

The state is every object the loop names (modules, optimisers, EMA and momentum networks,
``torch.Generator`` s, data orders: anything with ``state_dict``/``load_state_dict``) plus
the process's global random generators (torch, CUDA, numpy, Python), in lmbench's tensor
format (``tensorfile``): tensors as tensors, the structure around them as JSON.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmbench.core.errors import CorruptFile, one_line
from lmbench.store import tensorfile


def _flatten(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON for ``value`` with each tensor (or array) moved to ``tensors`` under a path name."""
    if isinstance(value, torch.Tensor):
        tensors[name] = value
        return {"tensor": name}
    if isinstance(value, np.ndarray):
        tensors[name] = torch.from_numpy(value.astype(np.int64) if value.dtype == np.uint32 else value)
        return {"array": name, "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {"dict": [[key, _flatten(item, f"{name}.{key}", tensors)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_flatten(item, f"{name}.{i}", tensors) for i, item in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": items}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if not isinstance(skeleton, dict):
        return skeleton
    if "tensor" in skeleton:
        return tensors[skeleton["tensor"]]
    if "array" in skeleton:
        return tensors[skeleton["array"]].numpy().astype(skeleton["dtype"])
    if "dict" in skeleton:
        return {key: _unflatten(item, tensors) for key, item in skeleton["dict"]}
    items = [_unflatten(item, tensors) for item in skeleton.get("list", skeleton.get("tuple", []))]
    return tuple(items) if "tuple" in skeleton else items


def _global_generators() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_generators(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _state_of(obj: Any) -> Any:
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def save(path: Path, objects: dict[str, Any], extra: dict) -> None:
    """Write the state of ``objects`` and the globals, with the JSON-able ``extra``, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    state = {name: _state_of(obj) for name, obj in objects.items()}
    skeleton = _flatten({"objects": state, "globals": _global_generators()}, "state", tensors)
    tensorfile.save(path, tensors, {"skeleton": skeleton, "extra": extra})


def _put(objects: dict[str, Any], state: dict) -> None:
    for name, obj in objects.items():
        value = state["objects"][name]
        if isinstance(obj, torch.Generator):
            obj.set_state(value)
        else:
            obj.load_state_dict(value)
        if isinstance(obj, torch.optim.Optimizer):  # it takes any shapes, and fails steps later
            for parameter, moments in obj.state.items():
                if any(v.ndim and v.shape != parameter.shape for v in moments.values() if torch.is_tensor(v)):
                    raise ValueError(f"{name}'s moments do not have their parameters' shapes")
    _set_global_generators(state["globals"])


def load(path: Path, objects: dict[str, Any]) -> dict:
    """Put the state in ``path`` back into ``objects`` and the globals; returns its ``extra``.
    A state that does not fit them (other names or shapes) is ``CorruptFile``, with ``objects``
    and the globals left as they were."""
    tensors, meta = tensorfile.load(path)
    before = copy.deepcopy({"objects": {name: _state_of(obj) for name, obj in objects.items()},
                            "globals": _global_generators()})
    try:
        _put(objects, _unflatten(meta["skeleton"], tensors))
        return dict(meta["extra"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        _put(objects, before)
        raise CorruptFile(f"{path}: a state that does not fit this training ({one_line(exc)[:300]})") from None

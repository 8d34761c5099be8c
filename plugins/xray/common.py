"""What the file-backed datasets share: a data root that must exist, and id sorting."""

from __future__ import annotations

from pathlib import Path

from lmbench.api import DataError


def data_root(root: str, dataset: str) -> Path:
    path = Path(root).expanduser()
    if "$" in root:
        raise DataError(f"{dataset}: data root {root!r} names an unset environment variable; set it or pass params.root")
    if not path.is_dir():
        raise DataError(f"{path}: {dataset} data root does not exist")
    return path


def natural_sorted(ids) -> list[str]:
    """Numeric ids in numeric order, then the rest alphabetically."""
    return sorted(ids, key=lambda i: (0, int(i), "") if i.isdigit() else (1, 0, i))


def summarize_ids(ids: list[str], limit: int = 8) -> str:
    shown = ", ".join(ids[:limit])
    return f"{shown}, ... ({len(ids)} in all)" if len(ids) > limit else shown


def sized_split(ids: list[str], train_size: int, val_size: int) -> dict[str, list[str]]:
    """The protocol's split of sorted ids: the first ``train_size`` train, the next
    ``val_size`` validation, the rest test."""
    return {
        "train": ids[:train_size],
        "val": ids[train_size:train_size + val_size],
        "test": ids[train_size + val_size:],
    }

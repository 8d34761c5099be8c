"""Each dataset decoded and resized once per input size, shared by the runs of a process and
kept on disk for later processes."""

from __future__ import annotations

import logging
from pathlib import Path

from lmbench.config.specs import ComponentSpec
from lmbench.core.errors import CorruptFile, PluginError
from lmbench.core.interfaces import Dataset
from lmbench.core.keys import content_key
from lmbench.data.prepare import STORED, Prepared, prepare
from lmbench.store import integrity, layout, tensorfile
from lmbench.store.locks import file_lock

log = logging.getLogger("lmbench")


class DataCache:
    """Each dataset decoded and resized once: kept in memory for the process and on disk,
    keyed by its params (data root included) and the input size, for later processes."""

    def __init__(self, cache_dir: Path):
        self.folder = layout.decoded_data_dir(cache_dir)
        self._entries: dict[str, tuple[Dataset, Prepared]] = {}

    def get(self, spec: ComponentSpec, size: int, on_progress=lambda done, total: None,
            resize: str = "antialiased") -> tuple[Dataset, Prepared]:
        identity = {"name": spec.name, "params": spec.params, "size": size, "stored": str(STORED)}
        key = content_key(identity if resize == "antialiased" else {**identity, "resize": resize})
        if key not in self._entries:
            dataset = spec.instantiate()
            if missing := dataset.missing_attributes():
                raise PluginError(missing)
            path = self.folder / f"{spec.name}-{size}px-{key}{tensorfile.SUFFIX}"
            # held while decoding, so that parallel workers wait for one decode and read its file
            with file_lock(path.with_suffix(".lock")):
                prepared = self._read(path)
                if prepared is None:
                    ids = list(dict.fromkeys(dataset.split("train") + dataset.split("val") + dataset.split("test")))
                    prepared = prepare(dataset, ids, size, on_progress, resize)
                    tensorfile.save(path, *prepared.to_tensors())
            if len(self._entries) >= 2:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (dataset, prepared)
        return self._entries[key]

    def _read(self, path: Path) -> Prepared | None:
        """The decoded dataset at ``path``; None when absent or corrupt (set aside)."""
        if not path.exists():
            return None
        try:
            return Prepared.from_tensors(*tensorfile.load(path))
        except CorruptFile as exc:
            integrity.set_aside(path, self.folder.parent)
            log.warning("%s: set aside under %s; decoding the dataset again", exc,
                        self.folder.parent / integrity.CORRUPT)
            return None

"""lmbench's public plugin API: what a plugin imports, all from here.

    from lmbench.api import hookimpl, Pretrainer, train_steps

The interfaces, ``hookimpl`` and the errors are light to import; the helpers that need torch
(the shared pre-training loop, augmentation, autocast) load on first use, so that a
plugin's ``__init__`` importing ``hookimpl`` from here keeps ``lmbench plugins`` fast.
Everything else in ``lmbench`` is internal and may change between versions.
"""

from __future__ import annotations

import importlib

from lmbench.core.errors import CorruptFile, DataError, LmbenchError, PluginError, SkipRun
from lmbench.core.hookspecs import hookimpl, hooks
from lmbench.core.interfaces import (
    Backbone,
    Component,
    Dataset,
    Executor,
    HeadStrategy,
    LoadReport,
    MatchingHead,
    PretrainContext,
    Pretrainer,
    Sample,
    Selector,
    WeightSlot,
)
from lmbench.core.params import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval

#: every hook a plugin may implement (decorated ``@hookimpl``) -> what it is for; ``register(name, target)``
#: takes a class, or a "module:Class" string imported only when the component is used
HOOKS = hooks()

#: name -> module, imported on first use
_LAZY = {
    "train_steps": "lmbench.train.pretraining", "ema": "lmbench.train.pretraining",
    "resize_image": "lmbench.data.geometry", "to_input": "lmbench.data.geometry", "to_original": "lmbench.data.geometry",
    "augment": "lmbench.train.augment", "augment_images": "lmbench.train.augment",
    "autocast": "lmbench.train.engine", "tf32": "lmbench.train.engine", "default_cache_dir": "lmbench.config.matrix",
    "Summary": "lmbench.run.jobs", "one_line": "lmbench.core.errors",
    "check_inside": "lmbench.data.io", "find_image": "lmbench.data.io", "parse_number": "lmbench.data.io",
    "read_image": "lmbench.data.io", "read_point_lines": "lmbench.data.io", "read_text_file": "lmbench.data.io",
    "read_image_and_spacing": "lmbench.data.io", "read_weights": "lmbench.store.tensorfile", "image_shape": "lmbench.data.io", "outside_image": "lmbench.data.io",
}

__all__ = [
    "Backbone", "Component", "CorruptFile", "DataError", "Dataset", "Executor", "HeadStrategy", "LmbenchError", "LoadReport",
    "HOOKS", "MatchingHead", "PluginError", "PretrainContext", "Pretrainer", "Sample", "Selector", "SkipRun", "WeightSlot", "hookimpl",
    "NonNegativeFloat", "NonNegativeInt", "PositiveFloat", "PositiveInt", "UnitInterval", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmbench.api' has no attribute {name!r}")

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
from lmbench.core.hookspecs import hookimpl
from lmbench.core.interfaces import (
    Backbone,
    Component,
    Dataset,
    Executor,
    HeadStrategy,
    LoadReport,
    PretrainContext,
    Pretrainer,
    Sample,
    Selector,
    WeightSlot,
)
from lmbench.core.params import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval

#: every hook a plugin may implement (decorated ``@hookimpl``), with what it is called with
HOOKS = {
    "lmbench_register_datasets(register)": "register(name, target): Dataset classes",
    "lmbench_register_pretrainers(register)": "register(name, target): Pretrainer classes",
    "lmbench_register_backbones(register)": "register(name, target): Backbone classes",
    "lmbench_register_heads(register)": "register(name, target): HeadStrategy classes",
    "lmbench_register_selectors(register)": "register(name, target): Selector classes (which training images get the labels)",
    "lmbench_register_executors(register)": "register(name, target): Executor classes (where runs are computed)",
    "lmbench_register_commands(app)": "app: the `lmbench` typer app, to add commands to",
}
#: target: a class, or a "module:Class" string imported only when the component is used

#: name -> module, imported on first use
_LAZY = {
    "train_steps": "lmbench.run.pretraining", "ema": "lmbench.run.pretraining",
    "augment": "lmbench.run.augment", "augment_images": "lmbench.run.augment",
    "autocast": "lmbench.run.engine", "tf32": "lmbench.run.engine", "default_cache_dir": "lmbench.run.matrix",
    "Summary": "lmbench.run.runner", "one_line": "lmbench.run.runner",
    "check_inside": "lmbench.run.io", "find_image": "lmbench.run.io", "parse_number": "lmbench.run.io",
    "read_image": "lmbench.run.io", "read_point_lines": "lmbench.run.io", "read_text_file": "lmbench.run.io",
    "read_image_and_spacing": "lmbench.run.io", "read_weights": "lmbench.run.tensorfile", "image_shape": "lmbench.run.io", "outside_image": "lmbench.run.io",
}

__all__ = [
    "Backbone", "Component", "CorruptFile", "DataError", "Dataset", "Executor", "HeadStrategy", "LmbenchError", "LoadReport",
    "HOOKS", "PluginError", "PretrainContext", "Pretrainer", "Sample", "Selector", "SkipRun", "WeightSlot", "hookimpl",
    "NonNegativeFloat", "NonNegativeInt", "PositiveFloat", "PositiveInt", "UnitInterval", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmbench.api' has no attribute {name!r}")

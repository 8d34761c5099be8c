"""Hooks a plugin implements to add components to lmbench: the one list of them.

Each ``register`` callback takes ``(name, target)`` where target is a class or, to keep
start-up light, a ``"module:Class"`` string imported only when the component is used.
``lmbench.api.HOOKS``, the registry and the plugin docs page are all read from this module.
"""

from __future__ import annotations

import inspect
import sys

import pluggy

hookspec = pluggy.HookspecMarker("lmbench")
hookimpl = pluggy.HookimplMarker("lmbench")


@hookspec
def lmbench_register_datasets(register):
    """Register Dataset classes."""


@hookspec
def lmbench_register_pretrainers(register):
    """Register Pretrainer classes."""


@hookspec
def lmbench_register_backbones(register):
    """Register Backbone classes."""


@hookspec
def lmbench_register_heads(register):
    """Register HeadStrategy classes."""


@hookspec
def lmbench_register_selectors(register):
    """Register Selector classes (which training images get the labels)."""


@hookspec
def lmbench_register_executors(register):
    """Register Executor classes (where a matrix's runs are computed)."""


@hookspec
def lmbench_register_commands(app):
    """Add commands to the ``lmbench`` typer app."""


def hooks() -> dict[str, str]:
    """Every hook as ``"name(arguments)"`` -> the first line of its docstring, in file order."""
    module = sys.modules[__name__]
    found = [(f.__code__.co_firstlineno, name, f) for name, f in vars(module).items()
             if name.startswith("lmbench_") and inspect.isfunction(f)]
    return {f"{name}({', '.join(inspect.signature(f).parameters)})": (inspect.getdoc(f) or name).splitlines()[0]
            for _, name, f in sorted(found)}

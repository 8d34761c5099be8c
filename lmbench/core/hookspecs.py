"""Hooks a plugin implements to add components to lmbench.

Each ``register`` callback takes ``(name, target)`` where target is a class or, to keep
start-up light, a ``"module:Class"`` string imported only when the component is used.
"""

from __future__ import annotations

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

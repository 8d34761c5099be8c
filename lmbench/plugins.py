"""Plugin discovery: entry points of the ``lmbench`` group, loaded one by one.

A plugin that fails to import, or raises inside a hook, is recorded as broken with its
error and everything else keeps working; ``LMBENCH_STRICT_PLUGINS=1`` makes that fatal.
Components are registered as ``"module:Class"`` strings and imported on first use, so
listing plugins never imports torch.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points

import pluggy

from lmbench import hookspecs
from lmbench.errors import PluginError
from lmbench.interfaces import KINDS, Component

GROUP = "lmbench"
HOOKS = {
    "dataset": "lmbench_register_datasets",
    "pretrainer": "lmbench_register_pretrainers",
    "backbone": "lmbench_register_backbones",
    "head": "lmbench_register_heads",
    "executor": "lmbench_register_executors",
}


@dataclass
class Plugin:
    """One entry point: where it comes from and whether it loaded."""

    name: str
    package: str
    version: str
    error: str | None = None


@dataclass
class Registration:
    kind: str
    name: str
    target: str | type
    plugin: Plugin


@dataclass
class Registry:
    plugins: list[Plugin] = field(default_factory=list)
    components: dict[tuple[str, str], Registration] = field(default_factory=dict)
    manager: pluggy.PluginManager = field(default_factory=lambda: pluggy.PluginManager(GROUP))

    def names(self, kind: str) -> list[str]:
        return sorted(name for k, name in self.components if k == kind)

    def registration(self, kind: str, name: str) -> Registration:
        try:
            return self.components[(kind, name)]
        except KeyError:
            known = self.names(kind)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known) or 'none'}"
            raise PluginError(f"unknown {kind} {name!r}{hint}") from None

    def get(self, kind: str, name: str) -> type[Component]:
        """The component class, imported now if it was registered as a string."""
        reg = self.registration(kind, name)
        if isinstance(reg.target, str):
            module_name, _, attr = reg.target.partition(":")
            try:
                reg.target = getattr(importlib.import_module(module_name), attr)
            except Exception as exc:
                raise PluginError(
                    f"{kind} {name!r} from plugin {reg.plugin.name!r} failed to import "
                    f"{reg.target}: {type(exc).__name__}: {exc}"
                ) from exc
        if not (isinstance(reg.target, type) and issubclass(reg.target, KINDS[kind])):
            raise PluginError(f"{kind} {name!r} from plugin {reg.plugin.name!r} is not a {KINDS[kind].__name__}")
        return reg.target


def _strict() -> bool:
    return os.environ.get("LMBENCH_STRICT_PLUGINS", "") not in ("", "0")


def _fail(plugin: Plugin, message: str) -> None:
    plugin.error = message
    if _strict():
        raise PluginError(f"plugin {plugin.name!r} ({plugin.package}): {message}")


def load_registry() -> Registry:
    """Discover every entry point of the group and collect what each registers."""
    registry = Registry()
    registry.manager.add_hookspecs(hookspecs)
    by_name: dict[str, Plugin] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name):
        dist = ep.dist
        plugin = Plugin(ep.name, dist.name if dist else "?", dist.version if dist else "?")
        registry.plugins.append(plugin)
        try:
            registry.manager.register(ep.load(), name=ep.name)
            by_name[ep.name] = plugin
        except Exception as exc:
            _fail(plugin, f"import failed: {type(exc).__name__}: {exc}")

    for kind, hook_name in HOOKS.items():
        for impl in getattr(registry.manager.hook, hook_name).get_hookimpls():
            plugin = by_name[impl.plugin_name]

            def register(name: str, target: str | type, kind=kind, plugin=plugin) -> None:
                previous = registry.components.get((kind, name))
                if previous is not None:
                    raise PluginError(f"{kind} {name!r} is already registered by plugin {previous.plugin.name!r}")
                registry.components[(kind, name)] = Registration(kind, name, target, plugin)

            try:
                impl.function(register=register)
            except Exception as exc:
                _fail(plugin, f"{hook_name} raised {type(exc).__name__}: {exc}")
    return registry


@cache
def registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    return load_registry()

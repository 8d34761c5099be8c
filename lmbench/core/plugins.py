"""Plugin discovery: entry points of the ``lmbench`` group, loaded one by one.

Each plugin module is registered with pluggy, which checks its hook implementations against
``lmbench.core.hookspecs``, and every hook is called through pluggy, one plugin at a time. A plugin
that fails to import, names a hook that does not exist, takes an argument its hook does not
pass, or raises inside a hook is recorded as broken with one line saying what and where,
and everything else keeps working; ``LMBENCH_STRICT_PLUGINS=1`` makes that fatal.
Components are registered as ``"module:Class"`` strings and imported on first use, so
listing plugins never imports torch.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

import pluggy

from lmbench.core import hookspecs
from lmbench.core.errors import PluginError
from lmbench.core.interfaces import KINDS, Component
from lmbench.core.params import check_defaults

GROUP = "lmbench"
#: each kind's registration hook (every kind has one in ``hookspecs``: a test holds it)
HOOKS = {kind: f"lmbench_register_{kind}s" for kind in KINDS}


@dataclass
class Plugin:
    """One entry point: where it comes from and whether it loaded."""

    name: str
    package: str
    version: str
    error: str | None = None
    module: object = None  # the registered module, once it loaded and passed the checks


@dataclass
class Registration:
    kind: str
    name: str
    target: str | type
    plugin: Plugin
    checked: bool = False  # its Params defaults checked (check_defaults), once imported


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

    def code_version(self, kind: str, name: str) -> str:
        """What identifies a component's code in cache and run keys: its distribution and
        version, plus a hash of its source for an editable or unversioned install, so that
        fixing a plugin's code trains and scores again."""
        reg = self.registration(kind, name)
        version = f"{reg.plugin.package}=={reg.plugin.version}"
        module = reg.target.partition(":")[0] if isinstance(reg.target, str) else reg.target.__module__
        source = source_hash(module)
        return version if source is None else f"{version}+{source}"

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
        if not reg.checked:
            check_defaults(reg.target.Params, f"{kind} {name!r} from plugin {reg.plugin.name!r}")
            reg.checked = True
        return reg.target


def _module_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).resolve() if spec and spec.origin and os.path.exists(spec.origin) else None


def own_modules(module: str) -> dict[str, Path]:
    """``module`` and every module of its own top-level package it imports, directly or
    through another: the code a component runs that is its plugin's (read, not imported)."""
    package = module.split(".")[0]
    found: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in found or path is None or path.suffix != ".py":
            continue
        found[name] = path
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""),
                                                   name if is_package else name.rpartition(".")[0]) \
                    if node.level else node.module or ""
                todo += [base, *(f"{base}.{alias.name}" for alias in node.names)]  # a name may be a submodule
        todo = [t for t in todo if t.split(".")[0] == package]
    return found


@cache
def source_hash(module: str) -> str | None:
    """For a module outside site-packages (an editable install, a working tree): sha256 (12
    hex digits) of its source and of its own package's modules it imports (``own_modules``),
    so that editing one component of a plugin re-keys that component only. None for an
    installed release, "unknown" where the source cannot be found."""
    origin = _module_file(module)
    if origin is None:
        return "unknown"
    if {"site-packages", "dist-packages"} & set(origin.parts):
        return None
    digest = hashlib.sha256()
    for name, path in sorted(own_modules(module).items()):
        digest.update(name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _strict() -> bool:
    return os.environ.get("LMBENCH_STRICT_PLUGINS", "") not in ("", "0")


def _fail(plugin: Plugin, message: str) -> None:
    plugin.error = message
    if _strict():
        raise PluginError(f"plugin {plugin.name!r} ({plugin.package}): {message}")


SPECS = {name: inspect.signature(getattr(hookspecs, name)).parameters
         for name in dir(hookspecs) if name.startswith("lmbench_")}


def _where(function) -> str:
    try:
        return f"{inspect.getsourcefile(function)}:{inspect.getsourcelines(function)[1]}"
    except (OSError, TypeError):
        return getattr(function, "__module__", "?")


def hook_problem(module) -> str | None:
    """What is wrong with a plugin module's hooks, in one line, or None."""
    for name, function in vars(module).items():
        if not callable(function):
            continue
        marked = hasattr(function, f"{GROUP}_impl")
        if name not in SPECS and (marked or name.startswith("lmbench_")):
            close = difflib.get_close_matches(name, SPECS, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; the hooks are {', '.join(sorted(SPECS))}"
            return f"unknown hook {name} at {_where(function)}{hint}"
        if name in SPECS:
            if not marked:
                return f"{name} at {_where(function)} is not marked @hookimpl (from lmbench.api import hookimpl)"
            wanted = list(SPECS[name])
            extra = [a for a in inspect.signature(function).parameters if a not in wanted]
            if extra:
                return (f"{name}({', '.join(inspect.signature(function).parameters)}) at {_where(function)}: "
                        f"the hook passes only {', '.join(wanted)}, not {', '.join(extra)}")
    return None


def call_hook(registry: Registry, plugin: Plugin, hook_name: str, **kwargs) -> bool:
    """Call one plugin's implementation of a hook through pluggy; a raise marks it broken and
    returns False."""
    if plugin.module is None:
        return True
    others = [p.module for p in registry.plugins if p.module is not None and p is not plugin]
    try:
        registry.manager.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)
        return True
    except Exception as exc:
        _fail(plugin, f"{hook_name} raised {type(exc).__name__}: {' '.join(str(exc).split())}")
        return False


def load_registry() -> Registry:
    """Discover every entry point of the group and collect what each registers."""
    registry = Registry()
    registry.manager.add_hookspecs(hookspecs)
    for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name):
        dist = ep.dist
        plugin = Plugin(ep.name, dist.name if dist else "?", dist.version if dist else "?")
        registry.plugins.append(plugin)
        try:
            module = ep.load()
        except Exception as exc:
            _fail(plugin, f"import failed: {type(exc).__name__}: {' '.join(str(exc).split())}")
            continue
        problem = hook_problem(module)
        if problem is None:
            try:
                registry.manager.register(module, name=ep.name)
                plugin.module = module
            except pluggy.PluginValidationError as exc:  # anything hook_problem did not foresee
                problem = " ".join(str(exc).split())
        if problem:
            _fail(plugin, problem)

    for kind, hook_name in HOOKS.items():
        for plugin in registry.plugins:

            def register(name: str, target: str | type, kind=kind, plugin=plugin) -> None:
                previous = registry.components.get((kind, name))
                if previous is not None:
                    raise PluginError(f"{kind} {name!r} is already registered by plugin {previous.plugin.name!r}")
                registry.components[(kind, name)] = Registration(kind, name, target, plugin)

            call_hook(registry, plugin, hook_name, register=register)
    return registry


@cache
def registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    return load_registry()

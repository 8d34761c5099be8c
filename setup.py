"""The package list, found rather than listed: lmbench and the built-in plugins, which install
as ``lmbench_plugins`` from the ``plugins/`` folder (everything else is in pyproject.toml)."""

from setuptools import find_packages, setup

plugins = ["lmbench_plugins" + name.removeprefix("plugins") for name in find_packages(include=["plugins", "plugins.*"])]
setup(packages=find_packages(include=["lmbench", "lmbench.*"]) + plugins)

"""lmbench: a reproducible benchmark of pre-training for few-shot landmark detection in x-rays."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lmbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

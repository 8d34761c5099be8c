"""lmbench: a reproducible benchmark of pre-training for few-shot landmark detection in x-rays."""

import os
from importlib.metadata import PackageNotFoundError, version

# Weights never download at run time: plugins read the hub's local cache or a path, and a
# missing file fails at once instead of after the hub's network time-outs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

try:
    __version__ = version("lmbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

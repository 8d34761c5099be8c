"""lmbench: a reproducible benchmark of pre-training for few-shot landmark detection in x-rays."""

import os
import sys
from importlib.metadata import PackageNotFoundError, version

# Weights never download at run time: plugins read the hub's local cache or a path, and a
# missing file fails at once instead of after the hub's network time-outs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "huggingface_hub.constants" in sys.modules:  # imported first (by timm, say): it read the variable already
    sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = os.environ["HF_HUB_OFFLINE"].upper() in {"1", "ON", "YES", "TRUE"}

try:
    __version__ = version("lmbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

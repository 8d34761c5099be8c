from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"

# A matrix small enough to run in about a second per cell on a CPU.
TINY_MATRIX = """
name = "{name}"
profile = "smoke"
image_size = 32
seeds = {seeds}
labels = {labels}
output = "{output}"
cache_dir = "{cache}"

[finetune]
epochs = {epochs}
samples_per_epoch = 8
early_stopping = 50

[[datasets]]
name = "synthetic"
params = {{ n_train = 12, n_val = 4, n_test = 6, height = 100, width = 80 }}

{pretrainers}

[[backbones]]
name = "smp-unet"
params = {{ encoder = "tu-resnet10t", encoder_depth = 3, decoder_channels = [32, 16, 8] }}

[[heads]]
name = "gaussian"
{extra}
"""


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMBENCH_CACHE_DIR", str(tmp_path / "cache"))


def tiny_matrix(
    folder: Path, name: str = "tiny", seeds=(0,), labels=(1, 2), epochs: int = 2,
    pretrainers: str = '[[pretrainers]]\nname = "scratch"', extra: str = "",
) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        TINY_MATRIX.format(
            name=name, seeds=list(seeds), labels=list(labels), epochs=epochs, pretrainers=pretrainers,
            extra=extra, output=folder / "results", cache=folder / "cache",
        )
    )
    return path


def pretrain_context(images, backbone, saved: dict | None = None, num_landmarks: int = 19):
    """A CPU PretrainContext that keeps each saved checkpoint in ``saved``."""
    import torch

    from lmbench.core.interfaces import PretrainContext

    return PretrainContext(
        images=images, backbone=backbone, num_landmarks=num_landmarks, seed=0, device=torch.device("cpu"),
        progress=lambda done, total: None,
        save_checkpoint=lambda step, weights: saved.__setitem__(step, weights) if saved is not None else None,
    )


def lmbench_cli(*args: str, env_extra: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh process."""
    env = {**os.environ, "COLUMNS": "200", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "lmbench", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )

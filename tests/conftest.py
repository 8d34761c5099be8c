from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per test process: workers that each spread over every core wait on each other
    # at every parallel region (a 30 s test took 260 s beside another)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

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


@pytest.fixture(autouse=True)
def one_thread_again():
    """A matrix run sets its own thread count (``threads``, 2 by default) for the process: the
    next test in this worker starts at one thread again."""
    yield
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


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


def fake_run_row(key: str, pretrainer: str, labels: int, seed: int, **changes) -> dict:
    """A finished run row (smp U-Net, Gaussian head, synthetic data) for tests of what reads
    results folders; ``changes`` replace or add columns."""
    row = {
        "run_key": key, "matrix": "fake", "status": "ok", "error": None,
        "dataset": "synthetic", "dataset_label": "synthetic", "dataset_params": "{}",
        "pretrainer": pretrainer, "pretrainer_label": pretrainer, "pretrainer_params": "{}",
        "backbone": "smp-unet", "backbone_label": "smp-unet", "backbone_params": "{}",
        "head": "gaussian", "head_label": "gaussian", "head_params": "{}",
        "labels": labels, "seed": seed, "selection": "first", "image_size": 64, "finetune": "{}",
        "unit": "mm", "thresholds": "[2.5, 5.0]", "finished_at": f"2026-01-01T00:00:0{seed}",
    }
    return {**row, **changes}


def random_split(n: int, num_landmarks: int = 2, seed: int = 0, size: int = 32):
    """A prepared split of ``n`` random ``size`` px images and landmarks, for engine tests."""
    import numpy as np
    import torch

    from lmbench.data.prepare import Prepared

    g = torch.Generator().manual_seed(seed)
    return Prepared([str(i) for i in range(n)], torch.rand(n, 1, size, size, generator=g),
                    torch.rand(n, num_landmarks, 2, generator=g) * (size - 1), np.zeros((n, num_landmarks, 2)),
                    [(size, size)] * n, [None] * n)


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

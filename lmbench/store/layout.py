"""Where lmbench keeps things: the one module that names the folders of a results folder and
of the cache. Everything else asks here.

A results folder (a matrix's ``output``/``name``)::

    runs/<run_key>.parquet          one row per run: its config, provenance, cost, health
    metrics/ predictions/ curves/   the run's other tables, under the same file name
    pretrain_curves/<pretrain_key>.parquet
    models/<run_key>.safetensors    saved detectors (``save_models``)
    claims/<training_key>.lock      held while a process runs that group
    logs/<run_key>.log              a failed run's traceback

The cache (``cache_dir``)::

    data/<dataset>-<size>px-<key>.safetensors   decoded datasets at input size
    pretrain/<pretrain_key>/                    one pre-training: weights, curve, health, resume state
    pretrain/<pretrain_key>.lock
    corrupt/                                    files that failed their check, set aside
"""

from __future__ import annotations

from pathlib import Path

RUNS = "runs"
MODELS = "models"
PRETRAIN_CURVES = "pretrain_curves"
PRETRAIN = "pretrain"
DATA = "data"
TENSOR_SUFFIX = ".safetensors"


def run_file(results_dir: Path, run_key: str) -> Path:
    return results_dir / RUNS / f"{run_key}.parquet"


def table_file(results_dir: Path, kind: str, run_key: str) -> Path:
    """One of a run's tables (``runs``, ``metrics``, ``predictions``, ``curves``)."""
    return results_dir / kind / f"{run_key}.parquet"


def results_dir_of(run_path: Path) -> Path:
    """The results folder holding ``run_path`` (a file of one of its table folders)."""
    return run_path.parent.parent


def model_file(results_dir: Path, run_key: str) -> Path:
    return results_dir / MODELS / f"{run_key}{TENSOR_SUFFIX}"


def pretrain_curve_file(results_dir: Path, pretrain_key: str) -> Path:
    return results_dir / PRETRAIN_CURVES / f"{pretrain_key}.parquet"


def claim_file(results_dir: Path, training_key: str) -> Path:
    return results_dir / "claims" / f"{training_key}.lock"


def log_file(results_dir: Path, run_key: str) -> Path:
    return results_dir / "logs" / f"{run_key}.log"


def pretrain_entry(cache_dir: Path, pretrain_key: str) -> Path:
    """The folder of one pre-training in the cache."""
    return cache_dir / PRETRAIN / pretrain_key


def pretrain_lock(cache_dir: Path, pretrain_key: str) -> Path:
    return cache_dir / PRETRAIN / f"{pretrain_key}.lock"


def cache_root_of(pretrain_file: Path) -> Path:
    """The cache folder holding a file of a pre-training's entry."""
    return pretrain_file.parents[2]


def decoded_data_dir(cache_dir: Path) -> Path:
    return cache_dir / DATA

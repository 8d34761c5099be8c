"""Results as plain parquet: one set of files per run, each written atomically.

Layout under a matrix's results folder::

    runs/<run_key>.parquet         one row: identity, config, provenance, cost, status
    metrics/<run_key>.parquet      long format: split, eval_mode, metric, landmark, value
    predictions/<run_key>.parquet  one row per test image and landmark
    curves/<run_key>.parquet       one row per fine-tuning epoch: train and validation loss, lr
    pretrain_curves/<pretrain_key>.parquet  one row per pre-training step: loss and chance
    models/<run_key>.safetensors   the fine-tuned detector, for runs with ``save_models``

The run row is written last, so a run with a run row is complete; a process killed
mid-write leaves only a hidden temporary file, which no reader looks at and the next run
removes. Every file is written with parquet's page checksums and, in its footer, the sha256
of its values; reading verifies both. A run whose row or any of its tables fails is set
aside (``integrity``) with a warning: readers show the rest, and ``lmbench run`` redoes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmbench.core.errors import CorruptFile
from lmbench.store import integrity, layout

SCHEMA_VERSION = 1

_s, _i, _f, _b = pa.string(), pa.int64(), pa.float64(), pa.bool_()
RUN_SCHEMA = pa.schema(
    [
        ("schema_version", _i), ("run_key", _s), ("matrix", _s), ("status", _s), ("error", _s),
        ("profile", _s),
        ("dataset", _s), ("dataset_label", _s), ("dataset_params", _s),
        ("pretrainer", _s), ("pretrainer_label", _s), ("pretrainer_params", _s),
        ("backbone", _s), ("backbone_label", _s), ("backbone_params", _s),
        ("head", _s), ("head_label", _s), ("head_params", _s),
        ("labels", _i), ("seed", _i), ("selection", _s), ("selection_params", _s), ("image_size", _i), ("finetune", _s),
        ("pretrain_key", _s), ("joint", _s), ("labelled_ids", _s), ("unit", _s), ("thresholds", _s),
        ("lmbench_version", _s), ("plugin_versions", _s), ("torch_version", _s), ("device", _s),
        ("device_name", _s), ("cuda_version", _s), ("deterministic", _b), ("git_sha", _s),
        ("wall_time_s", _f), ("pretrain_time_s", _f), ("pretrain_cache_hit", _b), ("peak_memory_mb", _f),
        ("n_parameters", _i), ("epochs", _i), ("best_epoch", _i), ("finished_at", _s),
        ("excluded", _s),  # JSON: sample id -> why the dataset left it out (bad annotation or image)
        ("model_saved", _b),
        ("health", _s),  # "ok", or one line naming each problem found (lmbench.evaluate.health)
        ("health_measures", _s),  # JSON: what the verdict was computed from
        ("stage_seconds", _s),  # JSON: seconds per stage of the run (lmbench.train.timing), adding up to its wall time
        ("threads", _i),  # torch's intra-op threads the run computed with (null: not recorded)
        ("conformal_level", _f),  # the coverage the uncertainty regions are calibrated for
    ]
)
METRIC_SCHEMA = pa.schema(
    [
        ("schema_version", _i), ("run_key", _s), ("split", _s), ("eval_mode", _s),
        ("metric", _s), ("landmark", _s), ("value", _f), ("unit", _s),
    ]
)
PREDICTION_SCHEMA = pa.schema(
    [
        ("schema_version", _i), ("run_key", _s), ("split", _s), ("image_id", _s),
        ("landmark_index", _i), ("landmark", _s), ("x", _f), ("y", _f), ("x_true", _f), ("y_true", _f),
        ("error", _f), ("unit", _s),
        # the heatmap's spread and the radii of the fixed and adaptive conformal regions, in ``unit``
        ("spread", _f), ("radius", _f), ("radius_adaptive", _f),
    ]
)
CURVE_SCHEMA = pa.schema(
    [
        ("schema_version", _i), ("run_key", _s), ("epoch", _i), ("train_loss", _f), ("val_loss", _f), ("lr", _f),
    ]
)
PRETRAIN_CURVE_SCHEMA = pa.schema(
    [
        ("schema_version", _i), ("pretrain_key", _s), ("step", _i), ("loss", _f),
        ("chance", _f),  # the loss of a model that learned nothing; null where the pretrainer gives none
    ]
)
TABLES = {"runs": RUN_SCHEMA, "metrics": METRIC_SCHEMA, "predictions": PREDICTION_SCHEMA, "curves": CURVE_SCHEMA,
          "pretrain_curves": PRETRAIN_CURVE_SCHEMA}
#: a run's own tables beside its run row
COMPANIONS = ("metrics", "predictions", "curves")
#: a pre-training's curve, in its cache entry
PRETRAIN_CURVE = "curve.parquet"
_DIGEST = b"lmbench.sha256"

log = logging.getLogger("lmbench")


def _digest(table: pa.Table) -> str:
    """sha256 of a table's values: what page checksums miss (a flipped bit in the footer)."""
    return hashlib.sha256(json.dumps(table.to_pydict(), sort_keys=True, default=str).encode()).hexdigest()


def write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with integrity.replacing(path) as tmp:
        pq.write_table(table.replace_schema_metadata({_DIGEST: _digest(table)}), tmp, write_page_checksum=True)


def read_verified(path: Path, schema: pa.Schema) -> pa.Table:
    """A table lmbench wrote, its checksums verified, with ``schema``'s columns (null where a
    file from before a column existed lacks it); ``CorruptFile`` naming the file otherwise."""
    try:
        handle = pq.ParquetFile(path, page_checksum_verification=True)
        stored = (handle.schema_arrow.metadata or {}).get(_DIGEST)
        table = handle.read()
        matches = stored is not None and stored.decode(errors="replace") == _digest(table)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:  # ValueError: a string no longer UTF-8
        raise CorruptFile(f"{path}: unreadable ({' '.join(str(exc).split())})") from None
    if stored is None:  # a table without its digest cannot be told from an edited one
        raise CorruptFile(f"{path}: carries no checksum, so it cannot be verified; lmbench reads only tables it "
                          f"wrote itself")
    if not matches:
        raise CorruptFile(f"{path}: corrupt (its values do not match the checksum written with them)")
    foreign = [name for name in table.column_names if name not in schema.names]
    identity = [name for name in ("schema_version", "run_key", "pretrain_key") if name in schema.names]
    if foreign or any(name not in table.column_names for name in identity):
        raise CorruptFile(f"{path}: not this folder's kind of table (its columns: "
                          f"{', '.join(table.column_names[:6])}{', ...' if table.num_columns > 6 else ''})")
    missing = [f.name for f in schema if f.name not in table.column_names]
    try:
        columns = [table[f.name].cast(f.type) if f.name not in missing else pa.nulls(len(table), f.type)
                   for f in schema]
    except (pa.ArrowException, KeyError) as exc:
        raise CorruptFile(f"{path}: not an lmbench results table ({exc})") from None
    return pa.Table.from_arrays(columns, schema=schema)


def intact(path: Path, schema: pa.Schema, root: Path) -> bool:
    """Whether ``path`` exists and verifies; a file that fails is set aside under ``root`` and said."""
    if not path.exists():
        return False
    try:
        read_verified(path, schema)
        return True
    except CorruptFile as exc:
        integrity.set_aside(path, root)
        log.warning("%s: set aside under %s", exc, root / integrity.CORRUPT)
        return False


def _table(kind: str, rows: list[dict]) -> pa.Table:
    rows = [{"schema_version": SCHEMA_VERSION, **row} for row in rows]
    return pa.Table.from_pylist(rows, schema=TABLES[kind])


def write_pretrain_curve(pretrain_key: str, rows: list[dict], path: Path) -> None:
    write_atomic(_table("pretrain_curves", [{"pretrain_key": pretrain_key, **r} for r in rows]), path)


def read_pretrain_curve(path: Path) -> list[dict]:
    """The rows of a pre-training curve file; none when it is missing or unreadable (said once)."""
    if not path.exists():
        return []
    try:
        return read_verified(path, PRETRAIN_CURVE_SCHEMA).to_pylist()
    except CorruptFile as exc:
        log.warning("%s: left out", exc)
        return []


def write_run(results_dir: Path, run: dict, metrics: list[dict] = (), predictions: list[dict] = (),
              curves: list[dict] = (), save_model=None, pretrain_curve: Path | None = None) -> None:
    """Write a run's metric, prediction and curve files, a copy of its pre-training's curve and,
    through ``save_model(path)``, its detector, then its run row (the completion marker)."""
    key = run["run_key"]
    if save_model is not None:
        save_model(layout.model_file(results_dir, key))
    if pretrain_curve is not None:
        target = layout.pretrain_curve_file(results_dir, run["pretrain_key"])
        target.parent.mkdir(parents=True, exist_ok=True)
        with integrity.replacing(target) as tmp:
            shutil.copyfile(pretrain_curve, tmp)
    for kind, rows in (("metrics", metrics), ("predictions", predictions), ("curves", curves)):
        path = results_dir / kind / f"{key}.parquet"
        if rows:
            write_atomic(_table(kind, [{"run_key": key, **r} for r in rows]), path)
        elif path.exists():
            path.unlink()  # a rerun that failed must not leave an older run's numbers behind
    write_atomic(_table("runs", [run]), layout.run_file(results_dir, key))


def run_files(roots: Iterable[Path]) -> list[Path]:
    """Every run row file under the given folders (any depth), or the files themselves."""
    files: list[Path] = []
    for root in roots:
        root = Path(root)
        files.extend([root] if root.is_file() else sorted(root.rglob("runs/*.parquet")))
    return files


def read_table(kind: str, run_file: Path, split: str | None = None) -> pa.Table | None:
    """The ``kind`` table belonging to a run row file (its rows of one ``split`` if given), or
    None when it has none."""
    path = layout.table_file(layout.results_dir_of(run_file), kind, run_file.stem)
    if not path.exists():
        return None
    table = read_verified(path, TABLES[kind])
    return table.filter(pc.equal(table["split"], split)) if split else table


def overall(run_file: Path, split: str, eval_mode: str, metric: str = "mre") -> float | None:
    """A run's ``metric`` over all landmarks on one split, or None when it has none."""
    table = read_table("metrics", run_file, split=split)
    return overall_of(table.to_pylist() if table is not None else [], split, eval_mode, metric)


def overall_of(rows: list[dict], split: str, eval_mode: str, metric: str = "mre") -> float | None:
    """``metric`` over all landmarks on one split, from metric rows, or None when they lack it."""
    return next((m["value"] for m in rows if m["split"] == split and m["eval_mode"] == eval_mode
                 and m["metric"] == metric and m["landmark"] == "all"), None)


def _check_belongs(table: pa.Table, file: Path, run_key: str, one_row: bool) -> None:
    """A table copied in from another run, or a run file of several rows, is not this run's."""
    keys = set(table["run_key"].to_pylist())
    if keys - {run_key} or (one_row and table.num_rows != 1):
        raise CorruptFile(f"{file}: holds {table.num_rows} rows of runs {sorted(map(str, keys))[:3]} where it "
                          f"should hold run {run_key}'s" + (" one row" if one_row else ""))


def _read_run(path: Path) -> list[dict]:
    """The rows of one run row file, once it and its tables verify; none, with a warning, after
    setting aside the file that failed and the run row, so that the run is pending again."""
    results_dir = layout.results_dir_of(path)
    files = [(path, RUN_SCHEMA)] + [(results_dir / kind / path.name, TABLES[kind]) for kind in COMPANIONS]
    rows: list[dict] = []
    for file, schema in files:
        try:
            table = read_verified(file, schema)
            _check_belongs(table, file, path.stem, one_row=file == path)
        except FileNotFoundError:
            continue
        except CorruptFile as exc:
            integrity.set_aside(file, results_dir)
            if file != path:
                integrity.set_aside(path, results_dir)
            log.warning("%s: set aside under %s; run %s is pending again", exc, results_dir / integrity.CORRUPT,
                        path.stem)
            return []
        if file == path:
            rows = table.to_pylist()
    return rows


def read_runs(roots: Iterable[Path]) -> list[dict]:
    """Run rows of every intact run under ``roots``, deduplicated on run_key (first found wins)."""
    seen: dict[str, dict] = {}
    for path in run_files(roots):
        for row in _read_run(path):
            row["_file"] = path
            seen.setdefault(row["run_key"], row)
    return list(seen.values())


def run_row(results_dir: Path, run_key: str) -> dict | None:
    """The run row of one run, or None when it has no intact one yet."""
    path = layout.run_file(results_dir, run_key)
    rows = _read_run(path) if path.exists() else []
    return {**rows[0], "_file": path} if rows else None


def status_of(results_dir: Path, run_key: str) -> str | None:
    """The recorded status of one run, or None when it has no intact run row yet."""
    row = run_row(results_dir, run_key)
    return row["status"] if row else None


def statuses(results_dir: Path) -> dict[str, str]:
    """run_key -> status of every run already recorded in one results folder."""
    return {row["run_key"]: row["status"] for row in read_runs([results_dir])}


def remove_leftovers(results_dir: Path) -> None:
    """Delete what killed writers left: temporary files, and detectors saved without the run
    row that would have followed them (the run is pending and saves it again)."""
    integrity.remove(integrity.stale_temporaries(results_dir), "temporary files")
    integrity.remove([path for path in sorted((results_dir / layout.MODELS).glob(f"*{layout.TENSOR_SUFFIX}"))
                      if not layout.run_file(results_dir, path.stem).exists() and integrity.untouched(path)],
                     "detectors without a run row")

"""Published numbers shipped with lmbench as package data (``lmbench/reporting/reference_tables/*.parquet``),
shown beside a reproduction's by ``lmbench leaderboard --reference NAME``."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lmbench.core.errors import LmbenchError
from lmbench.store.results import METRIC_SCHEMA, SCHEMA_VERSION, write_atomic

REFERENCE_DIR = Path(__file__).resolve().parent / "reference_tables"
_s, _i, _f = pa.string(), pa.int64(), pa.float64()
REFERENCE_SCHEMA = pa.schema(
    [field for field in METRIC_SCHEMA if field.name != "run_key"]
    + [("source", _s), ("dataset", _s), ("method", _s), ("pretrainer_label", _s), ("head_label", _s),
       ("backbone_label", _s), ("labels", _i), ("seeds", _i), ("std", _f)]
)


def write_reference(rows: list[dict], path: Path) -> None:
    rows = [{"schema_version": SCHEMA_VERSION, **row} for row in rows]
    write_atomic(pa.Table.from_pylist(rows, schema=REFERENCE_SCHEMA), path)


def available() -> list[str]:
    return sorted(p.stem for p in REFERENCE_DIR.glob("*.parquet"))


def load_reference(name: str) -> list[dict]:
    path = REFERENCE_DIR / f"{name}.parquet"
    if not path.exists():
        raise LmbenchError(f"{path}: no reference named {name!r}; available: {', '.join(available()) or 'none'}")
    return pq.read_table(path, schema=REFERENCE_SCHEMA).to_pylist()

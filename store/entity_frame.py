"""The entity frame a training set has one row per: events (user_id, item_id, event_timestamp,
label), checked before anything is joined. Rejected with an error naming the rows: missing
columns, null keys, timestamps or labels, naive timestamps, labels outside {0, 1}. Kept and
counted: duplicate rows (each is an impression) and unknown ids (their features come back null,
their history empty)."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from mmfs.core.contracts.tables import ENTITY

ENTITY_COLUMNS = tuple(ENTITY.names)


class EntityFrameError(ValueError):
    """The entity frame cannot be joined without losing or inventing rows."""


def read_entity_frame(source) -> pa.Table:
    """Events (a table directory, a parquet file, a pandas DataFrame or an Arrow table) -> checked Arrow.

    Rejected with an error naming the rows: missing columns, null keys/timestamps/labels, naive
    timestamps. Kept and counted: duplicate rows (each is an impression), unknown ids (their
    features come back null / empty history).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if not files:
            raise EntityFrameError(f"no parquet files under {path}")
        table = pads.dataset([str(f) for f in files], format="parquet").to_table()
    elif isinstance(source, pa.Table):
        table = source
    else:
        table = pa.Table.from_pandas(source, preserve_index=False)
    missing = [c for c in ENTITY_COLUMNS if c not in table.column_names]
    if missing:
        raise EntityFrameError(f"entity frame lacks column(s) {missing}; it needs {list(ENTITY_COLUMNS)}")
    table = table.select(list(ENTITY_COLUMNS))
    ts_type = table.schema.field("event_timestamp").type
    if not pa.types.is_timestamp(ts_type):
        raise EntityFrameError(f"event_timestamp must be a timestamp, got {ts_type}")
    if ts_type.tz is None:
        raise EntityFrameError(
            "event_timestamp is naive (no time zone): it is ambiguous, so it is refused. "
            "Make it UTC-aware, e.g. df.event_timestamp.dt.tz_localize('UTC')")
    for column in ENTITY_COLUMNS:
        nulls = table.column(column).null_count
        if nulls:
            rows = pc.indices_nonzero(pc.is_null(table.column(column))).to_pylist()[:5]
            raise EntityFrameError(f"{nulls} row(s) with null {column}, e.g. rows {rows}; fix or drop them upstream")
    bad_labels = pc.sum(pc.invert(pc.is_in(table.column("label"), pa.array([0, 1], table.column("label").type)))).as_py()
    if bad_labels:
        rows = pc.indices_nonzero(pc.invert(pc.is_in(table.column("label"), pa.array([0, 1], table.column("label").type)))).to_pylist()[:5]
        raise EntityFrameError(f"{bad_labels} row(s) with label not in {{0, 1}}, e.g. rows {rows}")
    return table.cast(pa.schema([f.with_nullable(True) for f in ENTITY.arrow()]))


def count_duplicates(entity: pa.Table) -> int:
    """Entity rows that repeat an earlier one exactly (each is an impression, kept and counted).

    Distinct row hashes first: if every row hashes apart, no two rows are equal and the answer is
    0; only otherwise (a duplicate, or a hash collision) are the rows themselves compared."""
    con = duckdb.connect()
    con.register("entity", entity)
    rows, hashes = con.execute("SELECT count(*), count(DISTINCT hash(user_id, item_id, event_timestamp, label)) FROM entity").fetchone()
    if rows == hashes:
        return 0
    return int(con.execute("SELECT count(*) - count(DISTINCT (user_id, item_id, event_timestamp, label)) FROM entity").fetchone()[0])

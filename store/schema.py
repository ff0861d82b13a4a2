"""Schema drift: every table against the feature views that declare it, each problem named by
view, table and column, so a drifted table fails ``mmfs apply`` (and ``mmfs training-set``) here,
not as a wrong value at training or serving time."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq


class SchemaDriftError(ValueError):
    """A table no longer matches the feature view that declares it."""


@dataclass(frozen=True)
class FieldCheck:
    """One mismatch between a feature view and its table, by view, table and column."""

    view: str
    table: str
    column: str
    problem: str


def _expected_arrow(dtype) -> tuple[pa.DataType, ...]:
    from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

    scalar = {Int64: (pa.int64(),), Int32: (pa.int32(),), Float32: (pa.float32(),), Float64: (pa.float64(),),
              Bool: (pa.bool_(),), String: (pa.string(), pa.large_string())}
    if isinstance(dtype, Array):
        inner = dtype.base_type
        if inner == UnixTimestamp:
            return tuple(pa.list_(pa.timestamp(u, tz)) for u in ("us", "ns") for tz in ("UTC", None))
        return tuple(pa.list_(pa.field("element", t, nullable)) for t in scalar[inner] for nullable in (True, False))
    return scalar.get(dtype, ())


def _types_match(actual: pa.DataType, expected: tuple[pa.DataType, ...]) -> bool:
    if pa.types.is_list(actual) or pa.types.is_large_list(actual):
        return any(pa.types.is_list(e) and actual.value_type == e.value_type for e in expected)
    return any(actual == e for e in expected)


def source_glob(source) -> str:
    """The parquet files behind a FileSource or SparkSource."""
    path = getattr(source, "path", None) or getattr(source, "file_options").uri
    return path if path.endswith(".parquet") else f"{path.rstrip('/')}/*.parquet"


def _unreadable(files: list[Path]) -> list[tuple[Path, str]]:
    """Files whose parquet footer cannot be read (truncated, corrupt, not parquet): each one named."""
    bad = []
    for f in files:
        try:
            pq.ParquetFile(f).metadata
        except (pa.ArrowException, OSError) as exc:
            bad.append((f, str(exc).split(". Either")[0]))
    return bad


def check_views(views) -> list[FieldCheck]:
    """Every field of every view against its table: present, right type, declared vector length."""
    problems: list[FieldCheck] = []
    for fv in views:
        glob = source_glob(fv.batch_source)
        table = glob.rsplit("/", 2)[0] if glob.endswith("/*.parquet") else glob
        files = sorted(Path(glob).parent.glob(Path(glob).name)) if "*" in glob else [Path(glob)]
        if not files:
            problems.append(FieldCheck(fv.name, table, "*", "no parquet files: run the Spark jobs first"))
            continue
        unreadable = _unreadable(files)
        if unreadable:
            problems += [FieldCheck(fv.name, table, "*", f"cannot read {f}: {reason}") for f, reason in unreadable]
            continue
        schema = ds.dataset([str(f) for f in files], format="parquet").schema
        wanted = [fv.batch_source.timestamp_field] + list(fv.join_keys) + (
            [fv.batch_source.created_timestamp_column] if fv.batch_source.created_timestamp_column else [])
        for column in wanted:
            if column not in schema.names:
                problems.append(FieldCheck(fv.name, table, column, "key/timestamp column missing"))
        # Vector lengths are sampled from the first row group, and only of the vector columns
        # (reading the whole group would read every embedding of it).
        vectors = [f.name for f in fv.features if (f.tags or {}).get("dim") and f.name in schema.names]
        head = pq.ParquetFile(files[0])
        first = head.read_row_group(0, columns=vectors) if vectors and head.num_row_groups else None
        for field in fv.features:
            if field.name not in schema.names:
                problems.append(FieldCheck(fv.name, table, field.name, f"column missing (declared {field.dtype})"))
                continue
            actual = schema.field(field.name).type
            if not _types_match(actual, _expected_arrow(field.dtype)):
                problems.append(FieldCheck(fv.name, table, field.name, f"type {actual} does not match declared {field.dtype}"))
                continue
            dim = (field.tags or {}).get("dim")
            if dim and first is not None and first.num_rows:
                lengths = pc.list_value_length(first.column(field.name)).drop_null()
                lengths_seen = set(pc.unique(lengths).to_pylist())
                if (field.tags or {}).get("empty_allowed") == "true":
                    lengths_seen.discard(0)
                if lengths_seen and lengths_seen != {int(dim)}:
                    problems.append(FieldCheck(fv.name, table, field.name,
                                               f"vector length {sorted(lengths_seen)} in the table, feature view declares {dim}"))
    return problems


def assert_no_drift(views) -> None:
    """Raise SchemaDriftError listing every problem ``check_views`` finds in ``views``."""
    problems = check_views(views)
    if problems:
        lines = "\n".join(f"  - view {p.view}, table {p.table}, column {p.column}: {p.problem}" for p in problems)
        raise SchemaDriftError(f"{len(problems)} table/feature-view mismatch(es):\n{lines}")

"""The point-in-time join, written once (DESIGN.md section 1): each entity row (user, item, T) takes,
per feature view, the newest value with ``event_timestamp <= T`` and, where the view has one,
``created_timestamp <= T`` (a back-filled value never leaks into rows before it was written);
values older than the view's TTL are null, as in Feast. DuckDB ASOF joins over the parquet tables
(``pit_query``), or Feast's own ``get_historical_features`` (``feast_join``) as the reference."""
from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from mmfs.store.entity_frame import ENTITY_COLUMNS, EntityFrameError
from mmfs.store.schema import source_glob


@dataclass(frozen=True)
class ViewJoin:
    """What the point-in-time join needs to know about one feature view of a service."""

    name: str
    glob: str
    join_keys: tuple[str, ...]
    timestamp: str
    created: str | None
    ttl_us: int | None
    fields: tuple[str, ...]
    vector_fields: tuple[str, ...] = ()
    list_fields: tuple[str, ...] = ()  # list features other than vectors (a sequence): by key when history="reference"
    request_time_fields: tuple[str, ...] = ()  # computed at the row's time by the loader, as the scorer does

    @property
    def key_column(self) -> str:
        """The training-row column that names this view's row by its event time (history by reference)."""
        return f"{self.name}__event_timestamp"

    def referenced(self, history: str) -> tuple[str, ...]:
        """Fields left out of the rows when ``history`` is "reference": lists (looked up by key) and request-time fields."""
        return self.list_fields + self.request_time_fields if history == "reference" else ()


@dataclass(frozen=True)
class SplitPoints:
    """Event-time cuts: rows before ``valid_from`` are train, before ``test_from`` valid, the rest test."""

    valid_from: dt.datetime
    test_from: dt.datetime


def service_views(store, service_name: str) -> list[ViewJoin]:
    """A ``ViewJoin`` for each feature view of the service, with the fields it projects and TTL in microseconds."""
    service = store.get_feature_service(service_name)
    views = []
    for projection in service.feature_view_projections:
        fv = store.get_feature_view(projection.name)
        fields = tuple(f.name for f in projection.features)
        vectors = tuple(f.name for f in projection.features if (f.tags or {}).get("dim"))
        request_time = tuple(f.name for f in projection.features if (f.tags or {}).get("request_time") == "true")
        lists = tuple(f.name for f in projection.features if f.name not in vectors + request_time and _is_list(f.dtype))
        ttl = fv.ttl
        views.append(ViewJoin(
            name=fv.name, glob=source_glob(fv.batch_source), join_keys=tuple(fv.join_keys),
            timestamp=fv.batch_source.timestamp_field, created=fv.batch_source.created_timestamp_column or None,
            ttl_us=int(ttl.total_seconds() * 1_000_000) if ttl and ttl.total_seconds() > 0 else None,
            fields=fields, vector_fields=vectors, list_fields=lists, request_time_fields=request_time,
        ))
    return views


def _is_list(dtype) -> bool:
    from feast.types import Array

    return isinstance(dtype, Array)


def split_points(entity: pa.Table, fractions: tuple[float, float] = (0.8, 0.9)) -> SplitPoints:
    """Cut points at the given quantiles of event time (rows at a cut go to the later split)."""
    con = duckdb.connect()
    con.register("entity", entity)
    valid_from, test_from = con.execute(
        f"SELECT quantile_disc(event_timestamp, {fractions[0]}), quantile_disc(event_timestamp, {fractions[1]}) FROM entity"
    ).fetchone()
    return SplitPoints(valid_from.astimezone(dt.timezone.utc), test_from.astimezone(dt.timezone.utc))


# -- the point-in-time join ---------------------------------------------------------------------

def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def split_sql(column: str, split: SplitPoints) -> str:
    """The split a row falls in by its event time; rows at a cut go to the later split."""
    return (f"CASE WHEN {column} < {_lit(split.valid_from.isoformat())}::TIMESTAMPTZ THEN 'train' "
            f"WHEN {column} < {_lit(split.test_from.isoformat())}::TIMESTAMPTZ THEN 'valid' ELSE 'test' END AS split")


def pit_query(views: list[ViewJoin], embeddings: str = "reference", split: SplitPoints | None = None,
              history: str = "inline") -> str:
    """SQL over the registered ``entity`` relation: entity columns + every feature, point-in-time.

    ``history="reference"``: a view's list fields are replaced by its key column (the event time
    of the row the join picked, null where none or expired), and request-time fields are left
    out; a view left with nothing to carry is not joined at all."""
    if history not in ("inline", "reference"):
        raise ValueError(f"history must be inline or reference, got {history!r}")
    ctes, joins = [], []
    selects = [f"e.{c}" for c in ENTITY_COLUMNS]
    for i, view in enumerate(views):
        keys = ", ".join(_q(k) for k in view.join_keys)
        skip = set(view.referenced(history)) | (set(view.vector_fields) if embeddings == "reference" else set())
        cols = [f for f in view.fields if f not in skip]
        by_key = history == "reference" and bool(view.list_fields)
        if by_key and view.created:
            raise ValueError(f"view {view.name}: list fields by reference need a view without a created timestamp")
        if not cols and not by_key:
            continue
        col_sql = "".join(f", {_q(c)}" for c in cols)
        source = f"read_parquet({_lit(view.glob)})"
        on_keys = " AND ".join(f"e.{_q(k)} = t{i}.{_q(k)}" for k in view.join_keys)
        if view.created:
            # Each version becomes visible at max(event, created); at any time the visible version
            # with the largest (event, created) wins. t{i} is that winner's timeline.
            ctes.append(
                f"v{i} AS (SELECT row_number() OVER () AS _vid, {keys}, CAST({_q(view.timestamp)} AS TIMESTAMPTZ) AS _ev, "
                f"CAST({_q(view.created)} AS TIMESTAMPTZ) AS _cr{col_sql} FROM {source})")
            ctes.append(
                f"t{i} AS (SELECT DISTINCT {keys}, greatest(_ev, _cr) AS _vis, "
                f"max({{'ev': _ev, 'cr': _cr, 'vid': _vid}}) OVER (PARTITION BY {keys} ORDER BY greatest(_ev, _cr) "
                f"RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS _best FROM v{i})")
            joins.append(f"ASOF LEFT JOIN t{i} ON {on_keys} AND e.event_timestamp >= t{i}._vis")
            joins.append(f"LEFT JOIN v{i} ON v{i}._vid = t{i}._best.vid")
            feature_ts = f"t{i}._best.ev"
        else:
            ctes.append(f"t{i} AS (SELECT {keys}, CAST({_q(view.timestamp)} AS TIMESTAMPTZ) AS _ev{col_sql} FROM {source})")
            joins.append(f"ASOF LEFT JOIN t{i} ON {on_keys} AND e.event_timestamp >= t{i}._ev")
            feature_ts = f"t{i}._ev"
        fresh = f"{feature_ts} IS NOT NULL"
        if view.ttl_us:
            fresh += f" AND {feature_ts} >= e.event_timestamp - to_microseconds({view.ttl_us})"
        value_alias = f"v{i}" if view.created else f"t{i}"
        selects += [f"CASE WHEN {fresh} THEN {value_alias}.{_q(c)} END AS {_q(c)}" for c in cols]
        if by_key:
            selects.append(f"CASE WHEN {fresh} THEN {feature_ts} END AS {_q(view.key_column)}")
    if split is not None:
        selects.append(split_sql("e.event_timestamp", split))
    return f"WITH {', '.join(ctes)} SELECT {', '.join(selects)} FROM entity e {' '.join(joins)}"


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in UTC with ``threads`` (default: all cores), spilling to a temp directory;
    ``MMFS_DUCKDB_MEMORY_LIMIT`` sets its memory limit."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {threads or os.cpu_count() or 1}")
    con.execute("SET preserve_insertion_order = false")
    if os.environ.get("MMFS_DUCKDB_MEMORY_LIMIT"):  # e.g. 2GB: joins and sorts spill to temp_directory beyond it
        con.execute(f"SET memory_limit = {_lit(os.environ['MMFS_DUCKDB_MEMORY_LIMIT'])}")
    con.execute(f"SET temp_directory = '{Path(tempfile.gettempdir()) / 'mmfs-duckdb'}'")  # not ./.tmp  # row order is not part of the contract; COPY streams in parallel
    return con


def duckdb_join(views: list[ViewJoin], entity: pa.Table, embeddings: str = "reference", history: str = "inline") -> pa.Table:
    """The point-in-time rows as one Arrow table, in entity order (for tests, parity and small sets)."""
    con = connect()
    con.register("entity_raw", entity)
    con.execute("CREATE TEMP VIEW entity AS SELECT row_number() OVER () AS _row, * FROM entity_raw")
    sql = pit_query(views, embeddings, history=history).replace("SELECT e.user_id", "SELECT e._row, e.user_id", 1)
    return con.sql(f"SELECT * EXCLUDE (_row) FROM ({sql}) ORDER BY _row").to_arrow_table()


def feast_join(store, service_name: str, entity: pa.Table, views: list[ViewJoin], embeddings: str = "reference") -> pa.Table:
    """The same rows through Feast's get_historical_features, created timestamps honoured."""
    service = store.get_feature_service(service_name)
    frame = entity.to_pandas()
    job = store.get_historical_features(entity_df=frame, features=service, full_feature_names=False, filter_by_created_timestamp=True)
    table = job.to_arrow()
    if table.num_rows != entity.num_rows:
        raise EntityFrameError(f"Feast returned {table.num_rows} rows for {entity.num_rows} entity rows")
    drop = [f for v in views for f in v.vector_fields if embeddings == "reference" and f in table.column_names]
    return table.drop_columns(drop)

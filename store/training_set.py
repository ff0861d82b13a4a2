"""training_set: point-in-time training sets for a Feast feature service.

    mmfs training-set --root out/movielens --service ctr_dmf_v1 --out out/movielens/training_sets/ctr_dmf_v1

The entity frame is the events table (user_id, item_id, event_timestamp, label): one training row
per event. Features come from the service's feature views as registered in Feast (sources, join
keys, TTL), joined point-in-time per DESIGN.md section 1:

- a value is used only if its ``event_timestamp <= T`` and, where the view has one, its
  ``created_timestamp <= T``: a back-filled value never leaks into rows before it was written;
- among those, the newest by (event_timestamp, created_timestamp) wins, as in Feast;
- values older than the view's TTL are null, as in Feast.

Two engines give the same rows where Feast is right:
- ``duckdb`` (default): DuckDB ASOF joins over the parquet tables, streamed straight to parquet.
  Created timestamps are honoured exactly (Feast's own join only uses them to break ties).
- ``feast``: ``FeatureStore.get_historical_features`` with the feature service, the reference,
  with ``filter_by_created_timestamp`` (Feast 0.67), so it honours created timestamps too and
  gives the same rows (tested). DuckDB's ASOF join stays the default for speed.

Embedding vectors (``Array(Float32)`` fields with a ``dim`` tag) are by default left out of the
rows (``--embeddings reference``): a model needs the history items' vectors as of T anyway, which
no row-wise join can give, so the loader (``mmfs.model.data``) looks every item up point-in-time in
the embedding table. ``--embeddings inline`` writes the target's vectors into each row.

Histories come by reference too (``--history reference``, the default): a row carries the key of
the user_sequence snapshot the join picked (``user_sequence__event_timestamp``, null where none
or expired) and ``hist_len``, not the 50 ids and timestamps; the loader looks the snapshot up by
that key. Request-time features (``hist_sim``, ``target_has_emb``: tagged ``request_time`` in the
repo) are not joined at all: the loader computes them at the row's time with the function the
scorer calls at request time. A row is then a dozen scalars, whatever the history length.
``--history inline`` writes the lists into the rows (what ``--engine feast`` gives).

Output: ``<out>/split=train|valid|test/*.parquet`` (split by event time), ``<out>/manifest.json``,
and a Feast saved dataset named after the output directory. A failed build leaves the previous
output in place.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mmfs.store.entity_frame import EntityFrameError, count_duplicates, read_entity_frame
from mmfs.store.pit_join import (  # noqa: F401 - the join this module builds sets with
    SplitPoints, ViewJoin, connect, duckdb_join, feast_join, pit_query, service_views, split_points, split_sql, _lit, _q)
from mmfs.core.contracts.names import embedding_view
from mmfs.store.feast_store import add_repo_args, assert_no_drift, open_store, parse_time, source_glob

SPLITS = ("train", "valid", "test")
ROW_GROUP_SIZE = 65_536


@dataclass
class BuildResult:
    """Where a training set was written, and its manifest."""

    out: str
    manifest: dict = field(default_factory=dict)


# -- build -------------------------------------------------------------------------------------

def _split_stats(out: Path, written: list[dict], entity_stats: dict, views: list[ViewJoin]) -> dict:
    """Per split: rows, files and each view's missing rows from the writer's statistics of the files
    it wrote (``COPY ... RETURN_STATS`` rows: nothing is read back), labels and time range from the
    entity rows the split holds. A split whose written rows differ from its entity rows is an error."""
    # A scalar field of each view, null exactly where the view had no value; every file has the same
    # columns (a list column's statistics are keyed by its element, so it is passed over).
    columns = written[0]["column_statistics"] if written else {}
    probes = {view.name: probe for view in views
              if (probe := next((f for f in view.fields if _q(f) in columns and f'{_q(f)}."element"' not in columns), None))}
    splits = {name: {"rows": 0, "files": [], "nulls": dict.fromkeys(sorted(probes), 0)} for name in SPLITS}
    for file in written:
        split = splits[file["partition_keys"]["split"]]
        split["rows"] += file["count"]
        split["files"].append(str(Path(file["filename"]).resolve().relative_to(out)))
        for view, probe in probes.items():
            split["nulls"][view] += int(file["column_statistics"][_q(probe)]["null_count"])
    stats = {}
    for name in SPLITS:
        split, ent = splits[name], entity_stats.get(name, {})
        rows, positives = split["rows"], ent.get("positives", 0)
        if rows != ent.get("rows", 0):
            raise EntityFrameError(f"split {name}: wrote {rows} rows for {ent.get('rows', 0)} entity rows")
        stats[name] = {"rows": rows, "positives": int(positives), "positive_rate": positives / rows if rows else None,
                       "min_event_timestamp": ent["min"].isoformat() if ent.get("min") else None,
                       "max_event_timestamp": ent["max"].isoformat() if ent.get("max") else None,
                       "rows_without_view": split["nulls"] if rows else {},
                       "files": sorted(split["files"])}
    return stats


def _entity_split_stats(con, split: SplitPoints) -> dict:
    """Rows, positives and event-time range of each split, from the registered entity rows (one pass)."""
    got = con.execute(f"SELECT split, count(*), sum(label), min(event_timestamp), max(event_timestamp) "
                      f"FROM (SELECT label, event_timestamp, {split_sql('event_timestamp', split)} FROM entity) GROUP BY split").fetchall()
    return {name: {"rows": rows, "positives": positives or 0, "min": lo, "max": hi} for name, rows, positives, lo, hi in got}


def embedding_view_name(store, service_name: str) -> str | None:
    """The service's item embedding view: item_embeddings, or a backfill's item_embeddings_v2."""
    return embedding_view(p.name for p in store.get_feature_service(service_name).feature_view_projections)


class EncoderIdentityError(ValueError):
    """A service with embeddings over a table that does not say which encoder wrote them."""


def _encoder_identity(store, service_name: str) -> dict:
    """The encoder identity the embedding table of ``service_name`` recorded (its ``_mmfs_meta.json``);
    ``{}`` for a service without embeddings. A service with embeddings whose table records none is
    an error naming the file: a checkpoint without it would be served over any encoder's vectors."""
    view = embedding_view_name(store, service_name)
    if view is None:
        return {}
    meta_file = Path(source_glob(store.get_feature_view(view).batch_source)).parent / "_mmfs_meta.json"
    try:
        identity = json.loads(meta_file.read_text()).get("encoder_identity") or {}
    except (OSError, ValueError) as exc:
        raise EncoderIdentityError(f"{service_name} reads {view}, but {meta_file} cannot be read ({exc}): it records which "
                                   "encoder wrote the vectors; rerun mmfs encode-items") from exc
    if not identity.get("encoder_id"):
        raise EncoderIdentityError(f"{service_name} reads {view}, but {meta_file} records no encoder id: rerun mmfs encode-items")
    return identity


def build(store, service_name: str, entity_source, out: str | Path, engine: str = "duckdb",
          embeddings: str = "reference", split: SplitPoints | None = None,
          fractions: tuple[float, float] = (0.8, 0.9), saved_dataset: bool = True, history: str | None = None) -> BuildResult:
    """Build the point-in-time training set of ``service_name`` for ``entity_source`` into ``out``.

    Writes ``split=train|valid|test`` parquet and ``manifest.json``, replacing ``out`` only once
    complete, and registers a Feast saved dataset unless ``saved_dataset`` is false. ``history``:
    "reference" (default with the duckdb engine) or "inline" (default, and the only choice, with feast)."""
    history = history or ("inline" if engine == "feast" else "reference")
    if engine == "feast" and history != "inline":
        raise ValueError("--engine feast writes histories inline (Feast's join gives no row keys): use --history inline")
    out = Path(out).resolve()
    began = time.perf_counter()
    views = service_views(store, service_name)
    assert_no_drift([store.get_feature_view(v.name) for v in views])
    entity = read_entity_frame(entity_source)
    split = split or split_points(entity, fractions)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    con = connect()
    try:
        join_began = time.perf_counter()
        if engine == "duckdb":
            con.register("entity", entity)
            query = pit_query(views, embeddings, split, history)
        elif engine == "feast":
            con.register("feast_rows", feast_join(store, service_name, entity, views, embeddings))
            con.register("entity", entity)
            query = f"SELECT *, {split_sql('event_timestamp', split)} FROM feast_rows"
        else:
            raise ValueError(f"engine must be duckdb or feast, got {engine!r}")
        copied = con.execute(f"COPY ({query}) TO {_lit(str(tmp))} (FORMAT parquet, PARTITION_BY (split), "
                             f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}, OVERWRITE_OR_IGNORE, RETURN_STATS)")
        names = [column[0] for column in copied.description]
        written = [dict(zip(names, row)) for row in copied.fetchall()]  # one row per file written
        join_seconds = time.perf_counter() - join_began
        splits = _split_stats(tmp, written, _entity_split_stats(con, split), views)
        features = [f"{v.name}:{f}" for v in views for f in v.fields]
        manifest = {
            "name": out.name,
            "feature_service": service_name,
            "engine": engine,
            "embeddings": embeddings,
            "features": features,
            "history": history,
            "vector_fields_by_reference": [f"{v.name}:{f}" for v in views for f in v.vector_fields] if embeddings == "reference" else [],
            "list_fields_by_reference": {v.name: {"key": v.key_column, "fields": list(v.list_fields)}
                                         for v in views if history == "reference" and v.list_fields},
            "request_time_fields": [f"{v.name}:{f}" for v in views for f in v.request_time_fields] if history == "reference" else [],
            "embedding_table": next((str(Path(v.glob).parent) for v in views if v.vector_fields), None),
            "encoder_identity": _encoder_identity(store, service_name),
            "views": [asdict(v) for v in views],
            "split_points": {"valid_from": split.valid_from.isoformat(), "test_from": split.test_from.isoformat()},
            "entity_rows": entity.num_rows,
            "duplicate_entity_rows": count_duplicates(entity),
            "splits": splits,
            "join_seconds": round(join_seconds, 3),
            "rows_per_second": round(entity.num_rows / join_seconds, 1) if join_seconds else None,
            "built_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if saved_dataset:
        register_saved_dataset(store, manifest, out, entity)
    manifest["seconds"] = round(time.perf_counter() - began, 3)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return BuildResult(str(out), manifest)


def _swap(tmp: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _by_reference(manifest: dict) -> set[str]:
    """Features a row does not carry: vectors and lists by reference, request-time features."""
    lists = {f"{view}:{f}" for view, ref in manifest.get("list_fields_by_reference", {}).items() for f in ref["fields"]}
    return set(manifest["vector_fields_by_reference"]) | lists | set(manifest.get("request_time_fields", []))


def register_saved_dataset(store, manifest: dict, out: Path, entity: pa.Table) -> None:
    """Register the training set at ``out`` as a Feast saved dataset named after it (by-reference vectors excluded)."""
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage
    from feast.saved_dataset import SavedDataset

    dataset = SavedDataset(
        name=manifest["name"], join_keys=["user_id", "item_id"],
        features=[f for f in manifest["features"] if f not in _by_reference(manifest)],
        storage=SavedDatasetFileStorage(path=str(out / "split=*" / "*.parquet")),
        feature_service_name=manifest["feature_service"],
        tags={"engine": manifest["engine"], "embeddings": manifest["embeddings"], "manifest": str(out / "manifest.json")},
    )
    times = entity.column("event_timestamp")
    dataset.min_event_timestamp = pc.min(times).as_py()
    dataset.max_event_timestamp = pc.max(times).as_py()
    store.registry.apply_saved_dataset(dataset, store.project, commit=True)


def main(argv: list[str] | None = None) -> int:
    """``mmfs training-set``: build the training set from ``<root>/events`` and print each split's rows. Returns 0."""
    parser = argparse.ArgumentParser(prog="mmfs training-set", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="table root the Spark jobs wrote (events are the entity frame)")
    parser.add_argument("--service", default="ctr_dmf_v1", help="Feast feature service (default %(default)s)")
    parser.add_argument("--out", default=None, help="output directory (default <root>/training_sets/<service>)")
    add_repo_args(parser)
    parser.add_argument("--engine", choices=("duckdb", "feast"), default="duckdb")
    parser.add_argument("--embeddings", choices=("reference", "inline"), default="reference")
    parser.add_argument("--history", choices=("reference", "inline"), default=None,
                        help="sequences by snapshot key and request-time features computed by the loader (reference, the "
                             "default with --engine duckdb), or written into every row (inline, what --engine feast gives)")
    parser.add_argument("--valid-from", type=parse_time, default=None, help="first valid-split time (UTC ISO)")
    parser.add_argument("--test-from", type=parse_time, default=None, help="first test-split time (UTC ISO)")
    parser.add_argument("--fractions", default="0.8,0.9", help="time quantiles of the cuts when not given (default %(default)s)")
    args = parser.parse_args(argv)
    store = open_store(args.config, args.repo, args.root)
    fractions = tuple(float(x) for x in args.fractions.split(","))
    split = None
    if args.valid_from or args.test_from:
        if not (args.valid_from and args.test_from) or args.valid_from > args.test_from:
            parser.error("give both --valid-from and --test-from, valid before test")
        split = SplitPoints(args.valid_from, args.test_from)
    out = args.out or f"{args.root}/training_sets/{args.service}"
    result = build(store, args.service, f"{args.root}/events", out, args.engine, args.embeddings, split, fractions,
                   history=args.history)
    m = result.manifest
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"training set {m['name']} ({m['feature_service']}, {m['engine']})")
    for column in ("split", "rows", "positive rate", "from", "to"):
        table.add_column(column)
    for name, s in m["splits"].items():
        table.add_row(name, f"{s['rows']:,}", f"{s['positive_rate']:.3f}" if s["positive_rate"] is not None else "-",
                      str(s["min_event_timestamp"]), str(s["max_event_timestamp"]))
    Console().print(table)
    print(f"{m['entity_rows']:,} rows in {m['join_seconds']:.2f} s ({m['rows_per_second']:,.0f} rows/s) -> {result.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The increment log: durable before visible.

Every row a micro-batch produces is first written to ``<root>/_stream/log/.<batch>.tmp/``, then
committed: a ``_COMMITTED`` marker is written last, and the folder is renamed to
``<root>/_stream/log/<batch>/`` (``commit``). On local disk and HDFS the rename is atomic; on an
object store it is a copy, and a staged folder holding the marker counts as committed: recovery
finishes its move. Only then are the online store written and the
files published into the tables, each by a rename (``apply``). A failure before the commit leaves
nothing anywhere; one after it is finished by the next batch or the next start (``recover``),
and the online writes it replays are absolute values, so a retry never counts a click twice.
Each applied batch appends the items whose rows changed to ``<root>/_stream/changed_items.jsonl``,
which the scorers follow to drop those items from their caches.

``CRASH_ENV`` is the fault-injection point the crash tests use: ``<point>:<batch>`` kills the
process with SIGKILL at that point of that batch (``after_commit``, ``after_online``,
``after_publish``).

Every file operation goes through a ``mmfs.core.files.Files`` (the stream's: Hadoop's FileSystem),
so the log and the tables may live on any file system.
"""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmfs.core.contracts.names import CHANGED_ITEMS_FILE, INCREMENT_LOG_SUBDIR, USER_SEQUENCE_VIEW
from mmfs.core.files import Files, join, read_parquet, write_parquet

LOG = INCREMENT_LOG_SUBDIR
COMMITTED = "_COMMITTED"
CRASH_ENV = "MMFS_CRASH_AT"


class PublishedError(RuntimeError):
    """A batch whose output name is taken by a published file: applying it would lose that file."""


def crash_point(point: str, batch_id: str) -> None:
    """SIGKILL this process when ``CRASH_ENV`` names this point of this batch (the crash tests)."""
    if os.environ.get(CRASH_ENV) == f"{point}:{batch_id}":
        os.kill(os.getpid(), signal.SIGKILL)


def commit(files: Files, root: str, batch_id: str, tables: dict[str, pa.Table]) -> None:
    """Write every table's rows of the batch under the log, then commit them: the marker, then one rename."""
    log_dir = join(root, LOG)
    pending = join(log_dir, f".{batch_id}.tmp")
    files.delete(pending)  # what an attempt that failed before its commit left
    files.mkdirs(pending)
    for table, data in tables.items():
        if data.num_rows:
            write_parquet(files, join(pending, f"{table}.parquet"), data, sync=True)
    events = tables.get("events")
    files.write_bytes(join(pending, COMMITTED), json.dumps({"events": events.num_rows if events is not None else 0}).encode(), sync=True)
    files.rename(pending, join(log_dir, batch_id))
    crash_point("after_commit", batch_id)


def apply(files: Files, root: str, batch_id: str, store, stats_views, tables: dict[str, pa.Table] | None = None) -> dict:
    """Make a committed batch visible: the online rows (absolute values, so a replay writes the
    same), then each table's file published by a rename. Safe to run again after any failure.
    ``stats_views`` are the (view, key, columns) the store serves; ``tables``, the batch's rows
    when the caller still holds them (else they are read from the log)."""
    batch = join(root, LOG, batch_id)
    # Files still staged. Publishing starts only after every online write, so a table already
    # published by an interrupted run had its online rows written before: nothing to replay.
    final = {e.name[:-len(".parquet")]: join(root, e.name[:-len(".parquet")], f"{batch_id}.parquet")
             for e in files.list(batch) if e.name.endswith(".parquet")}
    held: dict[str, pa.Table | None] = {}

    def read(table: str) -> pa.Table | None:
        if table not in final:
            return None
        if table not in held:
            held[table] = tables[table] if tables is not None and table in tables else \
                read_parquet(files, [join(batch, f"{table}.parquet")])
        return held[table]

    snapshots = read("user_sequence_snapshots")
    if snapshots is not None and snapshots.num_rows:
        newest = _newest(snapshots, "user_id")
        write_online(store, USER_SEQUENCE_VIEW, pd.DataFrame({
            "user_id": newest["user_id"], "event_timestamp": newest["event_timestamp"],
            "hist_item_ids": [h.tolist() for h in newest["hist_item_ids"]], "hist_ts_us": [h.tolist() for h in newest["hist_ts_us"]],
            "hist_len": newest["hist_len"]}))
    for view, key, names in stats_views:
        rows = read(view)
        if rows is None or not rows.num_rows:
            continue
        newest = _newest(rows, key)
        write_online(store, view, pd.DataFrame({
            key: newest[key], "event_timestamp": newest["event_timestamp"], names[0]: newest[names[0]], names[1]: newest[names[1]],
            names[2]: newest[names[2]].astype(np.float32)}))
    crash_point("after_online", batch_id)
    changed = sorted({int(i) for name in ("item_stats", "target_similarity") if (t := read(name)) is not None
                      for i in t.column("item_id").to_pylist()})
    taken = [target for target in final.values() if files.exists(target)]
    if taken:  # a staged file's name already published: another checkpoint's batch, never to be replaced
        raise PublishedError(f"batch {batch_id} would overwrite published output {taken}: it stays in {batch} "
                             f"until the name clash is resolved")
    for n, (table, target) in enumerate(final.items()):
        files.mkdirs(join(root, table))
        files.rename(join(batch, f"{table}.parquet"), target)
        if n == 0:
            crash_point("after_publish", batch_id)
    if changed:
        files.append_text(join(root, CHANGED_ITEMS_FILE), json.dumps({"batch": batch_id, "items": changed}) + "\n")
    files.delete(batch)
    return dict(final)


def write_online(store, view: str, frame: pd.DataFrame) -> None:
    """Feast's ``write_to_online_store`` for one view, its rows encoded and written by Feast's own
    provider (``ingest_df``) as that call does; the view is looked up by name rather than by
    building every view of the registry, which ``write_to_online_store`` does per call (tens of
    milliseconds a micro-batch)."""
    feature_view = store.get_feature_view(view, allow_registry_cache=True)
    store._get_provider().ingest_df(feature_view, frame)


def recover(files: Files, root: str, store, stats_views) -> dict[str, int]:
    """Finish every committed batch a failure left behind (oldest first) and drop uncommitted
    ones (their request failed before anything was visible). Returns the batches finished, each
    with the events it applied."""
    log_dir = join(root, LOG)
    for entry in files.list(log_dir):
        if entry.name.startswith("."):
            if entry.is_dir and files.exists(join(entry.path, COMMITTED)):
                _finish_move(files, entry.path, join(log_dir, entry.name[1:-len(".tmp")]))
            else:
                files.delete(entry.path)
    finished = {}
    for entry in files.list(log_dir):
        if entry.is_dir and not entry.name.startswith("."):
            finished[entry.name] = _events_of(files, entry.path)
            apply(files, root, entry.name, store, stats_views)
    return finished


def _events_of(files: Files, batch: str) -> int:
    """How many events a committed batch applies: its marker says (the events file may be published
    already); a batch committed before markers, its events file's footer."""
    marker, staged = join(batch, COMMITTED), join(batch, "events.parquet")
    if files.exists(marker):
        return int(json.loads(files.read_bytes(marker) or b"{}").get("events", 0))
    return pq.ParquetFile(pa.BufferReader(files.read_bytes(staged))).metadata.num_rows if files.exists(staged) else 0


def _finish_move(files: Files, staged: str, final: str) -> None:
    """A commit's rename that stopped part way (an object store copies file by file): move the rest."""
    files.mkdirs(final)
    for entry in files.list(staged):
        if not files.exists(join(final, entry.name)):
            files.rename(entry.path, join(final, entry.name))
    files.delete(staged)


def _newest(rows: pa.Table, key: str) -> pd.DataFrame:
    """Each key's newest row."""
    return rows.to_pandas().sort_values("event_timestamp").groupby(key, as_index=False).last()

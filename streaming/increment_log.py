"""The increment log: durable before visible.

Every row a micro-batch produces is first written to ``<root>/_stream/log/<batch>/`` and
committed by one directory rename (``commit``). Only then are the online store written and the
files published into the tables, each by a rename (``apply``). A failure before the commit leaves
nothing anywhere; one after it is finished by the next batch or the next start (``recover``),
and the online writes it replays are absolute values, so a retry never counts a click twice.
Each applied batch appends the items whose rows changed to ``<root>/_stream/changed_items.jsonl``,
which the scorers follow to drop those items from their caches.

``CRASH_ENV`` is the fault-injection point the crash tests use: ``<point>:<batch>`` kills the
process with SIGKILL at that point of that batch (``after_commit``, ``after_online``,
``after_publish``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmfs.core.contracts.names import CHANGED_ITEMS_FILE, INCREMENT_LOG_SUBDIR, USER_SEQUENCE_VIEW

LOG = INCREMENT_LOG_SUBDIR
CRASH_ENV = "MMFS_CRASH_AT"


class PublishedError(RuntimeError):
    """A batch whose output name is taken by a published file: applying it would lose that file."""


def crash_point(point: str, batch_id: str) -> None:
    """SIGKILL this process when ``CRASH_ENV`` names this point of this batch (the crash tests)."""
    if os.environ.get(CRASH_ENV) == f"{point}:{batch_id}":
        os.kill(os.getpid(), signal.SIGKILL)


def commit(root: Path, batch_id: str, tables: dict[str, pa.Table]) -> None:
    """Write every table's rows of the batch under the log, then commit them with one rename."""
    log_dir = root / LOG
    pending = log_dir / f".{batch_id}.tmp"
    pending.mkdir(parents=True)
    for table, data in tables.items():
        if data.num_rows:
            path = pending / f"{table}.parquet"
            pq.write_table(data, path)
            fsync(path)
    fsync(pending)
    os.replace(pending, log_dir / batch_id)
    fsync(log_dir)
    crash_point("after_commit", batch_id)


def apply(root: Path, batch_id: str, store, stats_views) -> dict:
    """Make a committed batch visible: the online rows (absolute values, so a replay writes the
    same), then each table's file published by a rename. Safe to run again after any failure.
    ``stats_views`` are the (view, key, columns) the store serves."""
    batch = root / LOG / batch_id
    # Files still staged. Publishing starts only after every online write, so a table already
    # published by an interrupted run had its online rows written before: nothing to replay.
    final = {p.stem: root / p.stem / f"{batch_id}.parquet" for p in batch.glob("*.parquet")}

    def read(table: str) -> pa.Table | None:
        return pq.read_table(batch / f"{table}.parquet") if table in final else None

    snapshots = read("user_sequence_snapshots")
    if snapshots is not None and snapshots.num_rows:
        newest = _newest(snapshots, "user_id")
        store.write_to_online_store(USER_SEQUENCE_VIEW, pd.DataFrame({
            "user_id": newest["user_id"], "event_timestamp": newest["event_timestamp"],
            "hist_item_ids": [h.tolist() for h in newest["hist_item_ids"]], "hist_ts_us": [h.tolist() for h in newest["hist_ts_us"]],
            "hist_len": newest["hist_len"]}))
    for view, key, names in stats_views:
        rows = read(view)
        if rows is None or not rows.num_rows:
            continue
        newest = _newest(rows, key)
        store.write_to_online_store(view, pd.DataFrame({
            key: newest[key], "event_timestamp": newest["event_timestamp"], names[0]: newest[names[0]], names[1]: newest[names[1]],
            names[2]: newest[names[2]].astype(np.float32)}))
    crash_point("after_online", batch_id)
    changed = sorted({int(i) for name in ("item_stats", "target_similarity") if (t := read(name)) is not None
                      for i in t.column("item_id").to_pylist()})
    taken = [str(target) for target in final.values() if target.exists()]
    if taken:  # a staged file's name already published: another checkpoint's batch, never to be replaced
        raise PublishedError(f"batch {batch_id} would overwrite published output {taken}: it stays in {batch} "
                             f"until the name clash is resolved")
    for n, (table, target) in enumerate(final.items()):
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(batch / f"{table}.parquet", target)
        if n == 0:
            crash_point("after_publish", batch_id)
    if changed:
        with open(root / CHANGED_ITEMS_FILE, "a") as f:
            f.write(json.dumps({"batch": batch_id, "items": changed}) + "\n")
    shutil.rmtree(batch)
    return {table: str(path) for table, path in final.items()}


def recover(root: Path, store, stats_views) -> list[str]:
    """Finish every committed batch a failure left behind (oldest first) and drop uncommitted
    ones (their request failed before anything was visible). Returns the batches finished."""
    log_dir = root / LOG
    if not log_dir.is_dir():
        return []
    finished = []
    for entry in sorted(log_dir.iterdir()):
        if entry.name.startswith("."):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_dir():
            apply(root, entry.name, store, stats_views)
            finished.append(entry.name)
    return finished


def _newest(rows: pa.Table, key: str) -> pd.DataFrame:
    """Each key's newest row."""
    return rows.to_pandas().sort_values("event_timestamp").groupby(key, as_index=False).last()


def fsync(path: Path) -> None:
    """fsync ``path`` (a file or a directory) so what was written to it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

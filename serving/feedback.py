"""The feedback path: new events update the user's sequence online now, and the offline tables too.

``FeedbackWriter.record(events)`` takes impressions and clicks as they happen and:

- online: writes the user's new sequence snapshot (``user_sequence``), the items' and the users'
  new cumulative stats (``item_stats``, ``user_stats`` where the store has it) with
  ``write_to_online_store``, so the next score sees them;
- offline: appends, as parquet files with the tables' own schemas, the events (``events`` and the
  durable landing table ``feedback_events``, which ``mmfs ingest`` reads on its next run), the
  snapshot rows, the stats rows and the target_similarity rows (computed by the Spark job's own
  ``similarity_batch`` from the offline embedding table, point-in-time). A training set built
  afterwards joins these rows exactly as the pipeline would have written them.

Snapshots and stats follow the pipeline's conventions: the snapshot after a positive at t holds
the last N positives up to t, ordered by (time, item), stamped t + 1 µs; stats count the events
up to t, stamped t + 1 µs, ctr smoothed with the pipeline's prior. Events older than what is
already online for their user or item are refused (late data goes through the batch pipeline):
applying them here would rewrite history the online store no longer holds.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.item_index import ItemEmbeddingIndex
from serving.online import MISSING, OnlineReader

ONE_US = dt.timedelta(microseconds=1)
TS = pa.timestamp("us", tz="UTC")
EVENTS = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("event_timestamp", TS), ("label", pa.int32())])
SNAPSHOTS = pa.schema([("user_id", pa.int64()), ("event_timestamp", TS), ("hist_item_ids", pa.list_(pa.int64())),
                       ("hist_timestamps", pa.list_(TS)), ("hist_ts_us", pa.list_(pa.int64())), ("hist_len", pa.int32())])
STATS = pa.schema([("item_id", pa.int64()), ("event_timestamp", TS), ("impressions", pa.int64()), ("clicks", pa.int64()),
                   ("ctr", pa.float32())])
USER_STATS = pa.schema([("user_id", pa.int64()), ("event_timestamp", TS), ("user_impressions", pa.int64()),
                        ("user_clicks", pa.int64()), ("user_ctr", pa.float32())])
# (view, entity key, stats columns, offline schema): the running-stats rule applied per entity
STATS_VIEWS = (("item_stats", "item_id", ("impressions", "clicks", "ctr"), STATS),
               ("user_stats", "user_id", ("user_impressions", "user_clicks", "user_ctr"), USER_STATS))


class FeedbackError(ValueError):
    """An event the feedback path refuses, with the reason."""


@dataclass(frozen=True)
class Event:
    user_id: int
    item_id: int
    event_timestamp: dt.datetime
    label: int


def _us(ts: dt.datetime) -> int:
    return int((ts - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) / ONE_US)


def _from_us(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=int(us))


class FeedbackWriter:
    def __init__(self, store, table_root: str | Path, reader: OnlineReader | None = None):
        from pipelines.item_stats import PRIOR_CTR, PRIOR_WEIGHT

        self.store = store
        self.root = Path(table_root)
        self.reader = reader or OnlineReader(store, _service_with(store, "user_sequence"))
        meta = self.root / "user_sequence_snapshots" / "_mmfs_meta.json"
        self.max_len = int(json.loads(meta.read_text()).get("max_len", 50)) if meta.is_file() else 50
        self.priors = {}  # view -> (prior_ctr, prior_weight) its table was written with
        for view, _, _, _ in STATS_VIEWS:
            stats_meta = self.root / view / "_mmfs_meta.json"
            stats = json.loads(stats_meta.read_text()) if stats_meta.is_file() else {}
            self.priors[view] = (stats.get("prior_ctr", PRIOR_CTR), stats.get("prior_weight", PRIOR_WEIGHT))
        self._index: tuple | None = None  # (table stamp, index, encoder id)

    def _embedding_index(self) -> tuple[ItemEmbeddingIndex | None, str]:
        """The offline embedding table's mm_emb versions, reloaded when the table is rewritten."""
        from model.data import load_embedding_index

        table = self.root / "item_embeddings"
        if not any(table.glob("*.parquet")):
            return None, ""
        stamp = os.stat(table / "_mmfs_meta.json").st_mtime_ns if (table / "_mmfs_meta.json").exists() else None
        if self._index is None or self._index[0] != stamp:
            meta = json.loads((table / "_mmfs_meta.json").read_text()) if stamp else {}
            encoder_id = (meta.get("encoder_identity") or {}).get("encoder_id", "")
            self._index = (stamp, load_embedding_index(table, "mm_emb"), encoder_id)
        return self._index[1], self._index[2]

    def record(self, events: list[Event]) -> dict:
        """Apply events (any users and items, any order within the batch). All or nothing: every event
        is checked before anything is written."""
        if not events:
            return {"events": 0, "users": 0, "items": 0}
        for n, e in enumerate(events):
            if e.event_timestamp.tzinfo is None:
                raise FeedbackError(f"events[{n}].event_timestamp has no time zone")
            if e.label not in (0, 1):
                raise FeedbackError(f"events[{n}].label must be 0 or 1, got {e.label!r}")
        events = sorted(events, key=lambda e: (e.event_timestamp, e.user_id, e.item_id))
        users = sorted({e.user_id for e in events})
        items = sorted({e.item_id for e in events})
        now = events[-1].event_timestamp
        seq = self.reader.read("user_sequence", users, now=now)
        stats = {view: self.reader.read(view, users if key == "user_id" else items, now=now)
                 for view, key, _, _ in STATS_VIEWS if view in self.reader.views}
        checks = [(seq, users, "user")] + [(rows, users if rows.view == "user_stats" else items, "user" if rows.view == "user_stats" else "item")
                                           for rows in stats.values()]
        for rows, keys, what in checks:
            first = {}
            for e in events:
                first.setdefault(e.user_id if what == "user" else e.item_id, e.event_timestamp)
            for key, status, stamp in zip(keys, rows.status, rows.event_timestamps):
                if status != MISSING and stamp is not None and first[key] + ONE_US < stamp:
                    raise FeedbackError(f"event for {what} {key} at {first[key].isoformat()} is older than its online "
                                        f"{rows.view} (stamped {stamp.isoformat()}); late events go through the batch pipeline")

        # Sequences: one snapshot per (user, positive time), from the online one.
        history = {}
        for n, user in enumerate(users):
            ids = seq.values["hist_item_ids"][n] or []
            ts = seq.values["hist_ts_us"][n] or []
            history[user] = list(zip(ts, ids))
        snapshots, sim_rows = [], []
        index, encoder_id = self._embedding_index()
        by_user_time = defaultdict(list)
        for e in events:
            by_user_time[(e.user_id, e.event_timestamp)].append(e)
        for (user, ts), group in sorted(by_user_time.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            before = history[user]
            for e in group:  # each event's row sees the history strictly before its time
                sim_rows.append((e, [i for _, i in before]))
            positives = [(_us(ts), e.item_id) for e in group if e.label == 1]
            if positives:
                history[user] = sorted(before + positives)[-self.max_len:]
                snapshots.append((user, ts + ONE_US, list(history[user])))

        # Item and user stats: cumulative per (key, time), from the online counts.
        stat_rows = {view: self._running_stats(events, stats[view], key, names, *self.priors[view])
                     for view, key, names, _ in STATS_VIEWS if view in stats}

        tables = {
            "events": pa.table({"user_id": [e.user_id for e in events], "item_id": [e.item_id for e in events],
                                "event_timestamp": [e.event_timestamp for e in events], "label": [e.label for e in events]}, schema=EVENTS),
            "user_sequence_snapshots": pa.table({
                "user_id": [u for u, _, _ in snapshots], "event_timestamp": [t for _, t, _ in snapshots],
                "hist_item_ids": [[i for _, i in h] for _, _, h in snapshots],
                "hist_timestamps": [[_from_us(t) for t, _ in h] for _, _, h in snapshots],
                "hist_ts_us": [[t for t, _ in h] for _, _, h in snapshots],
                "hist_len": [len(h) for _, _, h in snapshots]}, schema=SNAPSHOTS),
        }
        for view, key, names, schema in STATS_VIEWS:
            if view in stat_rows:
                rows_ = stat_rows[view]
                tables[view] = pa.table({key: [r[0] for r in rows_], "event_timestamp": [r[1] for r in rows_],
                                         names[0]: [r[2] for r in rows_], names[1]: [r[3] for r in rows_],
                                         names[2]: [r[4] for r in rows_]}, schema=schema)
        sim_input = pa.RecordBatch.from_pydict({
            "user_id": [e.user_id for e, _ in sim_rows], "item_id": [e.item_id for e, _ in sim_rows],
            "event_timestamp": [e.event_timestamp for e, _ in sim_rows], "label": [e.label for e, _ in sim_rows],
            "hist_item_ids": [h for _, h in sim_rows], "hist_len": [len(h) for _, h in sim_rows]},
            schema=pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("event_timestamp", TS), ("label", pa.int32()),
                              ("hist_item_ids", pa.list_(pa.int64())), ("hist_len", pa.int32())]))
        if index is not None:  # same code and point-in-time lookup as the Spark job
            from pipelines.target_similarity import similarity_batch

            sims = pa.Table.from_batches([similarity_batch(sim_input, index)])
            tables["target_similarity"] = sims.append_column("encoder_id", pa.array([encoder_id] * sims.num_rows, pa.string()))

        # Online first (the next score must see it), then the offline files, each written atomically.
        if snapshots:
            newest = {}
            for user, ts, h in snapshots:
                newest[user] = (ts, h)
            self.store.write_to_online_store("user_sequence", pd.DataFrame({
                "user_id": list(newest), "event_timestamp": [pd.Timestamp(t) for t, _ in newest.values()],
                "hist_item_ids": [[i for _, i in h] for _, h in newest.values()],
                "hist_ts_us": [[t for t, _ in h] for _, h in newest.values()],
                "hist_len": [len(h) for _, h in newest.values()]}))
        for view, key, names, _ in STATS_VIEWS:
            if view not in stat_rows:
                continue
            newest_stats = {r[0]: r for r in stat_rows[view]}
            self.store.write_to_online_store(view, pd.DataFrame({
                key: list(newest_stats), "event_timestamp": [pd.Timestamp(r[1]) for r in newest_stats.values()],
                names[0]: [r[2] for r in newest_stats.values()], names[1]: [r[3] for r in newest_stats.values()],
                names[2]: np.array([r[4] for r in newest_stats.values()], np.float32)}))
        batch_id = f"feedback-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
        written = {}
        for table, data in [("feedback_events", tables["events"])] + list(tables.items()):
            if data.num_rows:
                written[table] = str(self._append(table, data, batch_id))
        return {"events": len(events), "users": len(users), "items": len(items), "snapshots": len(snapshots), "files": written}

    def _running_stats(self, events: list[Event], online, key: str, names: tuple[str, str, str],
                       prior_ctr: float, prior_weight: float) -> list[tuple]:
        """(key, t + 1us, impressions, clicks, ctr) per (key, distinct time t), counting on from the
        online row: the Spark job's ``running_stats`` rule, event by event."""
        keys = list(dict.fromkeys(getattr(e, key) for e in events))
        order = {k: n for n, k in enumerate(sorted(keys))}
        counts = {}
        for k in keys:
            n = order[k]
            present = online.status[n] != MISSING
            counts[k] = (online.values[names[0]][n] if present else 0, online.values[names[1]][n] if present else 0)
        rows = []
        by_time = defaultdict(list)
        for e in events:
            by_time[(getattr(e, key), e.event_timestamp)].append(e)
        for (k, ts), group in sorted(by_time.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            impressions, clicks = counts[k]
            impressions, clicks = impressions + len(group), clicks + sum(e.label for e in group)
            counts[k] = (impressions, clicks)
            ctr = (clicks + prior_ctr * prior_weight) / (impressions + prior_weight)
            rows.append((k, ts + ONE_US, impressions, clicks, ctr))
        return rows

    def _append(self, table: str, data: pa.Table, batch_id: str) -> Path:
        staging = self.root / "_staging"
        staging.mkdir(parents=True, exist_ok=True)
        target_dir = self.root / table
        target_dir.mkdir(parents=True, exist_ok=True)
        tmp = staging / f".{table}-{batch_id}.parquet"
        pq.write_table(data, tmp)
        final = target_dir / f"{batch_id}.parquet"
        os.replace(tmp, final)
        return final


def _service_with(store, view: str) -> str:
    for service in store.list_feature_services():
        if any(p.name == view for p in service.feature_view_projections) and any(p.name == "item_stats" for p in service.feature_view_projections):
            return service.name
    raise FeedbackError(f"no feature service serves both {view} and item_stats")

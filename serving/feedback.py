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

The pipeline's contract holds for what feedback writes:

- every event is checked with ingest's own rules (``pipelines.event_rules``): a bad one refuses the
  whole request with ``InvalidEvents``, naming each event, field and rule (the app answers 422);
- an event's key is (user_id, item_id, event_timestamp), as in ingest: a key already recorded, or
  repeated in the request, is a retry and a no-op (counted as ``duplicates``); the same key with
  the other label is a conflict (``FeedbackError``, 409);
- durable before visible: every row a request produces is first written to
  ``<root>/_feedback_log/<batch>/`` and committed by one directory rename; only then are the
  online store written and the files published into the tables (each by a rename). A failure
  before the commit leaves nothing anywhere; one after it is finished by the next request (or the
  next start), before anything else, and the online writes it replays are absolute values, so a
  retry never counts a click twice.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.event_rules import event_violations
from pipelines.features.item_index import ItemEmbeddingIndex
from pipelines.features.similarity import similarity_batch
from pipelines.features.stats import PRIOR_CTR, PRIOR_WEIGHT, smoothed_ctr
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


LOG = "_feedback_log"  # under the table root: committed batches not yet fully applied


class FeedbackError(ValueError):
    """An event the feedback path refuses, with the reason."""


class InvalidEvents(FeedbackError):
    """Events that break ingest's rules: ``problems`` holds one {"field", "rule", "error"} per
    broken rule (field ``events.<n>.<column>``)."""

    def __init__(self, problems: list[dict]):
        self.problems = problems
        super().__init__("; ".join(f"{p['field']}: {p['error']} ({p['rule']})" for p in problems))


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
        self._items: tuple | None = None  # (table, stamp, known item ids)
        self.recover()
        self._keys = self._recorded_keys()  # (user, item, event µs) -> label, for every event feedback recorded

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

    def record(self, events: list[Event], now: dt.datetime | None = None) -> dict:
        """Apply events (any users and items, any order within the batch). All or nothing: every event
        is checked before anything is written, and what is written is committed to the log first.
        ``now`` (default: the clock) bounds the event times as ingest's run time does."""
        self.recover()
        if not events:
            return {"events": 0, "duplicates": 0, "users": 0, "items": 0, "snapshots": 0, "files": {}}
        self._validate(events, now or dt.datetime.now(dt.timezone.utc))
        events, duplicates = self._new_events(events)
        if not events:
            return {"events": 0, "duplicates": duplicates, "users": 0, "items": 0, "snapshots": 0, "files": {}}
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
            sims = pa.Table.from_batches([similarity_batch(sim_input, index)])
            tables["target_similarity"] = sims.append_column("encoder_id", pa.array([encoder_id] * sims.num_rows, pa.string()))

        tables = {"feedback_events": tables["events"], **tables}
        batch_id = f"feedback-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
        self._commit(batch_id, tables)
        for e in events:
            self._keys[_key(e)] = e.label
        written = self._apply(batch_id)
        return {"events": len(events), "duplicates": duplicates, "users": len(users), "items": len(items),
                "snapshots": len(snapshots), "files": written}

    # -- validation and keys ---------------------------------------------------------------------

    def _validate(self, events: list[Event], now: dt.datetime) -> None:
        known = self._known_items()
        problems = []
        for n, e in enumerate(events):
            for rule, reason in event_violations(e.user_id, e.item_id, e.event_timestamp, e.label, e.item_id in known, now):
                column = "item_id" if rule == "item_known" else next(c for c in ("user_id", "item_id", "event_timestamp", "label")
                                                                     if rule.startswith(c))
                problems.append({"field": f"events.{n}.{column}", "rule": rule, "error": reason})
        if problems:
            raise InvalidEvents(problems)

    def _known_items(self) -> set[int]:
        """The items table's ids (ingest's ``item_known``); a root without one (its tables were
        written some other way) falls back to the item_embeddings table's. Reloaded when rewritten."""
        for table in (self.root / "items", self.root / "item_embeddings"):
            files = sorted(table.glob("*.parquet"))
            if not files:
                continue
            stamp = tuple((f.name, f.stat().st_mtime_ns) for f in files)
            if self._items is None or self._items[:2] != (table, stamp):
                ids = pq.ParquetDataset([str(f) for f in files]).read(columns=["item_id"]).column("item_id")
                self._items = (table, stamp, set(ids.to_pylist()))
            return self._items[2]
        return set()

    def _new_events(self, events: list[Event]) -> tuple[list[Event], int]:
        """The events whose key is not recorded yet (one per key), and how many were retries."""
        fresh, seen, duplicates = [], {}, 0
        for n, e in enumerate(events):
            key = _key(e)
            label = self._keys.get(key, seen.get(key))
            if label is None:
                seen[key] = e.label
                fresh.append(e)
            elif label == e.label:
                duplicates += 1
            else:
                raise FeedbackError(f"events[{n}] (user {e.user_id}, item {e.item_id}, {e.event_timestamp.isoformat()}) has label "
                                    f"{e.label}, but the event with this key was recorded with label {label}")
        return fresh, duplicates

    def _recorded_keys(self) -> dict:
        files = sorted((self.root / "feedback_events").glob("*.parquet"))
        if not files:
            return {}
        recorded = pq.ParquetDataset([str(f) for f in files]).read(columns=["user_id", "item_id", "event_timestamp", "label"])
        ts = recorded.column("event_timestamp").cast(pa.int64()).to_pylist()  # µs
        return {(u, i, t): label for u, i, t, label in zip(recorded.column("user_id").to_pylist(), recorded.column("item_id").to_pylist(),
                                                          ts, recorded.column("label").to_pylist())}

    # -- the log: commit, apply, recover -----------------------------------------------------------

    def _commit(self, batch_id: str, tables: dict[str, pa.Table]) -> None:
        """Write every table's rows of the batch under the log, then commit them with one rename."""
        log_dir = self.root / LOG
        pending = log_dir / f".{batch_id}.tmp"
        pending.mkdir(parents=True)
        for table, data in tables.items():
            if data.num_rows:
                path = pending / f"{table}.parquet"
                pq.write_table(data, path)
                _fsync(path)
        _fsync(pending)
        os.replace(pending, log_dir / batch_id)
        _fsync(log_dir)

    def _apply(self, batch_id: str) -> dict:
        """Make a committed batch visible: the online rows (absolute values, so a replay writes the
        same), then each table's file published by a rename. Safe to run again after any failure."""
        batch = self.root / LOG / batch_id
        # Files still staged. Publishing starts only after every online write, so a table already
        # published by an interrupted run had its online rows written before: nothing to replay.
        final = {p.stem: self.root / p.stem / f"{batch_id}.parquet" for p in batch.glob("*.parquet")}

        def read(table: str) -> pa.Table | None:
            return pq.read_table(batch / f"{table}.parquet") if table in final else None

        snapshots = read("user_sequence_snapshots")
        if snapshots is not None and snapshots.num_rows:
            newest = snapshots.to_pandas().sort_values("event_timestamp").groupby("user_id", as_index=False).last()
            self.store.write_to_online_store("user_sequence", pd.DataFrame({
                "user_id": newest["user_id"], "event_timestamp": newest["event_timestamp"],
                "hist_item_ids": [h.tolist() for h in newest["hist_item_ids"]], "hist_ts_us": [h.tolist() for h in newest["hist_ts_us"]],
                "hist_len": newest["hist_len"]}))
        for view, key, names, _ in STATS_VIEWS:
            rows = read(view) if view in self.reader.views else None
            if rows is None or not rows.num_rows:
                continue
            newest = rows.to_pandas().sort_values("event_timestamp").groupby(key, as_index=False).last()
            self.store.write_to_online_store(view, pd.DataFrame({
                key: newest[key], "event_timestamp": newest["event_timestamp"], names[0]: newest[names[0]], names[1]: newest[names[1]],
                names[2]: newest[names[2]].astype(np.float32)}))
        for table, target in final.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(batch / f"{table}.parquet", target)
        shutil.rmtree(batch)
        return {table: str(path) for table, path in final.items()}

    def recover(self) -> list[str]:
        """Finish every committed batch a failure left behind (oldest first) and drop uncommitted
        ones (their request failed before anything was visible). Returns the batches finished."""
        log_dir = self.root / LOG
        if not log_dir.is_dir():
            return []
        finished = []
        for entry in sorted(log_dir.iterdir()):
            if entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_dir():
                self._apply(entry.name)
                finished.append(entry.name)
        return finished

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
            ctr = smoothed_ctr(clicks, impressions, prior_ctr, prior_weight)
            rows.append((k, ts + ONE_US, impressions, clicks, ctr))
        return rows

def _key(e: Event) -> tuple[int, int, int]:
    return (e.user_id, e.item_id, _us(e.event_timestamp))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _service_with(store, view: str) -> str:
    for service in store.list_feature_services():
        if any(p.name == view for p in service.feature_view_projections) and any(p.name == "item_stats" for p in service.feature_view_projections):
            return service.name
    raise FeedbackError(f"no feature service serves both {view} and item_stats")

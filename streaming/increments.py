"""The rules a micro-batch of events is applied with: ``IncrementWriter.record(events)``.

``mmfs stream`` calls it once per Spark micro-batch. For the new events it

- online: writes the user's new sequence snapshot (``user_sequence``), the items' and the users'
  new cumulative stats (``item_stats``, ``user_stats`` where the store has it) with Feast's
  ``write_to_online_store``, so the next score sees them;
- offline: appends, as parquet files with the tables' own schemas, the events (``events`` and the
  durable landing table ``feedback_events``, which ``mmfs ingest`` reads on its next run), the
  snapshot rows, the stats rows and the target_similarity rows (computed by the Spark job's own
  ``similarity_batch`` from the offline embedding table, point-in-time). A training set built
  afterwards joins these rows exactly as the batch jobs would have written them.

Snapshots and stats follow the batch jobs' rules, imported from ``mmfs.core.features``: the
snapshot after a positive at t holds the last N positives up to t, ordered by (time, item),
stamped t + 1 µs (``next_history``, ``stamp_after``); stats count the events up to t, stamped
t + 1 µs, ctr smoothed with the table's prior (``running_stats_rows``). They continue from each
key's newest offline row (``mmfs.streaming.state``), exact to the microsecond; the online store is
written, never counted on. The ``sequences`` rows (each event's history) are appended too; the
``user_sequence_current`` table is the batch's (the online store is the stream's current).

Exactly once:

- an event's key is (user_id, item_id, event_timestamp), as in ingest: a key already recorded, or
  repeated in the batch, is a retry and a no-op (counted as ``duplicates``); the same key with
  the other label is a conflict (returned in ``conflicts`` and not applied;
  the stream quarantines them);
- durable before visible (``mmfs.streaming.increment_log``): every row a batch produces is committed to
  ``<root>/_stream/log/<batch>/`` before the online store and the tables see it; a failure after
  the commit is finished by the next batch (or the next start), before anything else. The stream
  names a batch after Spark's batch id, so a batch Spark replays after a crash finds its own
  rows already recorded.

Late events, at or before the newest instant recorded for their user or item, would rewrite rows
already written (history already counted on, or the rows of that very instant): they are not
applied. They are appended to ``feedback_events`` (the
batch path: the next ``mmfs ingest`` and recompute folds them in) and to ``late_events``, and
counted in the result (``late``).
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from mmfs.core.contracts import tables as C
from mmfs.core.contracts.names import ITEM_STATS_VIEW, USER_SEQUENCE_VIEW, USER_STATS_VIEW
from mmfs.core.features.item_index import ItemEmbeddingIndex
from mmfs.core.features.similarity import similarity_batch
from mmfs.core.features.snapshot import STAMP_AFTER_US, next_history, stamp_after
from mmfs.core.features.stats import PRIOR_CTR, PRIOR_WEIGHT, running_stats_rows
from mmfs.core.events.landing import Event, KnownItems, check_events
from mmfs.core.files import Files, LocalFiles, basename, read_parquet
from mmfs.online.reader import OnlineReader
from mmfs.streaming import increment_log
from mmfs.streaming.increment_log import LOG  # noqa: F401 - where committed batches wait
from mmfs.streaming.state import NewestRows

# (view, entity key, stats columns, offline table): the running-stats rule applied per entity
STATS_VIEWS = ((ITEM_STATS_VIEW, "item_id", ("impressions", "clicks", "ctr"), C.ITEM_STATS),
               (USER_STATS_VIEW, "user_id", ("user_impressions", "user_clicks", "user_ctr"), C.USER_STATS))
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class IncrementError(ValueError):
    """A batch the writer refuses, with the reason."""


def _us(ts: dt.datetime) -> int:
    return int((ts - EPOCH) / dt.timedelta(microseconds=1))



class IncrementWriter:
    """Applies events online and offline for one store and table root (``record``); see the module docstring."""

    def __init__(self, store, table_root: str | Path, reader: OnlineReader | None = None, files: Files | None = None):
        """``files``: the file system of ``table_root`` (default the local disk; ``mmfs stream`` passes
        Hadoop's, ``mmfs.pipelines.spark.table_io.HadoopFiles``)."""
        self.store = store
        self.files = files or LocalFiles()
        self.root = str(table_root)
        self.reader = reader or OnlineReader(store, _service_with(store, USER_SEQUENCE_VIEW))
        self.max_len = int(self._meta("user_sequence_snapshots").get("max_len", 50))
        self.priors = {}  # view -> (prior_ctr, prior_weight) its table was written with
        for view, _, _, _ in STATS_VIEWS:
            stats = self._meta(view)
            self.priors[view] = (stats.get("prior_ctr", PRIOR_CTR), stats.get("prior_weight", PRIOR_WEIGHT))
        self._index: tuple | None = None  # (table stamp, index, encoder id)
        self.known = KnownItems(self.root, self.files)
        self.recovered: dict[str, int] = {}  # batch -> events a recovery applied for it
        self.recover()
        # What each rule counts on from: the newest offline row per key (mmfs.streaming.state).
        self.newest = {C.USER_SEQUENCE_SNAPSHOTS.name: NewestRows(self._table(C.USER_SEQUENCE_SNAPSHOTS.name), "user_id",
                                                                  ("hist_item_ids", "hist_ts_us"), self.files)}
        for view, key, names, table in STATS_VIEWS:
            self.newest[view] = NewestRows(self._table(table.name), key, names[:2], self.files)
        self._read_files: set[str] = set()
        self._keys = self._recorded_keys()  # (user, item, event µs) -> label, for every event feedback recorded

    @property
    def _stats_views(self) -> list[tuple[str, str, tuple[str, str, str]]]:
        """The stats views this store serves: (view, key, columns)."""
        return [(view, key, names) for view, key, names, _ in STATS_VIEWS if view in self.reader.views]

    def _table(self, name: str) -> str:
        return self.files.join(self.root, name)

    def _meta(self, table: str) -> dict:
        """A table's ``_mmfs_meta.json`` ({} without one)."""
        path = self.files.join(self._table(table), "_mmfs_meta.json")
        return json.loads(self.files.read_bytes(path)) if self.files.exists(path) else {}

    def _embedding_index(self) -> tuple[ItemEmbeddingIndex | None, str]:
        """The offline embedding table's mm_emb versions, reloaded when the table is rewritten."""
        from mmfs.model.data import load_embedding_index

        listing = self.files.list(self._table("item_embeddings"))
        if not any(e.name.endswith(".parquet") for e in listing):
            return None, ""
        stamp = frozenset((e.name, e.mtime_ms, e.size) for e in listing)
        if self._index is None or self._index[0] != stamp:
            encoder_id = (self._meta("item_embeddings").get("encoder_identity") or {}).get("encoder_id", "")
            self._index = (stamp, load_embedding_index(self._table("item_embeddings"), "mm_emb", self.files), encoder_id)
        return self._index[1], self._index[2]

    def record(self, events: list[Event], now: dt.datetime | None = None, batch_id: str | None = None) -> dict:
        """Apply ``events`` (``_record``). A batch that a failure had committed and the writer finished
        on recovery reads its events again as duplicates: they are counted as applied, under
        ``recovered``, not as duplicates."""
        self.recover()
        result = self._record(events, now, batch_id)
        recovered = self.recovered.pop(batch_id, 0) if batch_id else 0
        moved = min(recovered, result["duplicates"])
        return {**result, "events": result["events"] + moved, "duplicates": result["duplicates"] - moved, "recovered": recovered}

    def _record(self, events: list[Event], now: dt.datetime | None = None, batch_id: str | None = None) -> dict:
        """Apply events (any users and items, any order within the batch). Every event is checked
        first (``InvalidEvents`` names each broken rule; nothing is written), and what is written is
        committed to the log first. ``now`` (default: the clock) bounds the event times as ingest's
        run time does; ``batch_id`` names the log entry (the stream's: ``stream-g<generation>-<Spark batch id>``).
        Returns the counts: events applied, duplicates, late, users, items, snapshots, and the
        items whose rows changed. ``record`` has finished what a failure left in the log first."""
        result = {"events": 0, "duplicates": 0, "late": 0, "users": 0, "items": 0, "snapshots": 0, "changed_items": [], "conflicts": [], "files": {}}
        if not events:
            return result
        self._validate(events, now or dt.datetime.now(dt.timezone.utc))
        self._keys.update(self._recorded_keys())  # what another writer recorded since
        events, result["duplicates"], result["conflicts"] = self._new_events(events)
        if not events:
            return result
        events = sorted(events, key=lambda e: (e.event_timestamp, e.user_id, e.item_id))
        users = sorted({e.user_id for e in events})
        items = sorted({e.item_id for e in events})
        seq = self.newest[C.USER_SEQUENCE_SNAPSHOTS.name].get(users)
        stats = {view: self.newest[view].get(users if key == "user_id" else items) for view, key, _ in self._stats_views}
        late = self._late(events, [(seq, "user_id")] + [(stats[v], k) for v, k, _ in self._stats_views])
        events = [e for e in events if _key(e) not in late]
        event_rows = lambda rows: [(e.user_id, e.item_id, e.event_timestamp, e.label) for e in rows]  # noqa: E731
        late_rows = [e for e in sorted(late.values(), key=lambda e: (e.event_timestamp, e.user_id, e.item_id))]
        tables = {C.FEEDBACK_EVENTS.name: _table(C.FEEDBACK_EVENTS, event_rows(events + late_rows))}
        if late_rows:
            tables[C.LATE_EVENTS.name] = _table(C.LATE_EVENTS, event_rows(late_rows))
        snapshots = []
        if events:
            snapshots, sim_rows = self._sequence_rows(events, seq)
            tables[C.EVENTS.name] = _table(C.EVENTS, event_rows(events))
            tables[C.SEQUENCES.name] = _table(C.SEQUENCES, [(e.user_id, e.item_id, e.event_timestamp, e.label, [i for _, i in h],
                                                             [x for x, _ in h], len(h)) for e, h in sim_rows])
            tables[C.USER_SEQUENCE_SNAPSHOTS.name] = _table(C.USER_SEQUENCE_SNAPSHOTS, [
                (u, t, [i for _, i in h], [x for x, _ in h], [x for x, _ in h], len(h)) for u, t, h in snapshots])
            for view, key, names, table in STATS_VIEWS:
                if view in stats:
                    tables[view] = _table(table, self._stats_rows(events, stats[view], key))
            similarities = self._similarities(sim_rows)
            if similarities is not None:
                tables[C.TARGET_SIMILARITY.name] = similarities
        batch_id = batch_id or f"direct-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
        increment_log.commit(self.files, self.root, batch_id, tables)
        for e in events + late_rows:
            self._keys[_key(e)] = e.label
        written = increment_log.apply(self.files, self.root, batch_id, self.store, self._stats_views, tables)
        if C.FEEDBACK_EVENTS.name in written:  # its keys are recorded above: never read back
            self._read_files.add(basename(written[C.FEEDBACK_EVENTS.name]))
        for name, newest in self.newest.items():
            newest.update(tables.get(name), written.get(name))
        changed = sorted({e.item_id for e in events})
        return {**result, "events": len(events), "late": len(late_rows), "users": len({e.user_id for e in events}),
                "items": len(changed), "snapshots": len(snapshots), "changed_items": changed, "files": written}

    def recover(self) -> list[str]:
        """Finish every committed batch a failure left behind (``increment_log.recover``), and
        remember how many events each one applied (``record`` reports them for its batch)."""
        finished = increment_log.recover(self.files, self.root, self.store, self._stats_views)
        self.recovered.update(finished)
        return list(finished)

    # -- the rows a batch writes ------------------------------------------------------------------

    @staticmethod
    def _late(events: list[Event], checks) -> dict:
        """The events at or before the newest instant recorded for their user or item, by key. A
        row stamped s holds the events up to s - 1 µs: an event at t with ``stamp_after(t) <= s``
        belongs in rows that are written already, online and offline, and applying it would
        rewrite them (an older one: history already counted on; one at that very instant: a
        second row for the same (key, stamp)). Those go through the batch path. ``checks``:
        (newest rows by key, the event's key field)."""
        late = {}
        for newest, key in checks:
            for e in events:
                row = newest.get(getattr(e, key))
                if row is not None and _us(e.event_timestamp) + STAMP_AFTER_US <= row[0]:
                    late[_key(e)] = e
        return late

    def _sequence_rows(self, events: list[Event], seq: dict) -> tuple[list, list]:
        """One snapshot per (user, positive time), from the newest recorded one (the snapshot rule),
        and each event's history strictly before its time (the rows the similarity rule reads)."""
        history = defaultdict(list, {user: list(zip(ts_us or [], ids or [])) for user, (_, (ids, ts_us)) in seq.items()})
        snapshots, sim_rows = [], []
        by_user_time = defaultdict(list)
        for e in events:
            by_user_time[(e.user_id, e.event_timestamp)].append(e)
        for (user, ts), group in sorted(by_user_time.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            before = history[user]
            sim_rows += [(e, before) for e in group]
            positives = [(_us(ts), e.item_id) for e in group if e.label == 1]
            if positives:
                history[user] = next_history(before, positives, self.max_len)
                snapshots.append((user, stamp_after(ts), list(history[user])))
        return snapshots, sim_rows

    def _stats_rows(self, events: list[Event], newest: dict, key: str) -> list[tuple]:
        """The running-stats rule, counting on from the newest recorded row of each key."""
        counted = {k: (int(v[0]), int(v[1])) for k, (_, v) in newest.items()}
        return running_stats_rows([(getattr(e, key), e.event_timestamp, e.label) for e in events], counted,
                                  *self.priors[ITEM_STATS_VIEW if key == "item_id" else USER_STATS_VIEW])

    def _similarities(self, sim_rows: list) -> pa.Table | None:
        """The target_similarity rows: the Spark job's own ``similarity_batch`` over the offline
        embedding table, point in time. None without an embedding table."""
        index, encoder_id = self._embedding_index()
        if index is None:
            return None
        batch = pa.RecordBatch.from_pylist(
            [{"user_id": e.user_id, "item_id": e.item_id, "event_timestamp": e.event_timestamp, "label": e.label,
              "hist_item_ids": [i for _, i in h], "hist_len": len(h)} for e, h in sim_rows], schema=C.SIMILARITY_INPUT.arrow())
        sims = pa.Table.from_batches([similarity_batch(batch, index)])
        return sims.append_column("encoder_id", pa.array([encoder_id] * sims.num_rows, pa.string()))

    # -- validation and keys ---------------------------------------------------------------------

    def _validate(self, events: list[Event], now: dt.datetime) -> None:
        check_events(events, self.known.ids(), now)

    def _new_events(self, events: list[Event]) -> tuple[list[Event], int, list[tuple[Event, int]]]:
        """The events whose key is not recorded yet (one per key), how many were retries, and the
        conflicts: (event, the label its key was recorded with)."""
        fresh, seen, duplicates, conflicts = [], {}, 0, []
        for e in events:
            key = _key(e)
            label = self._keys.get(key, seen.get(key))
            if label is None:
                seen[key] = e.label
                fresh.append(e)
            elif label == e.label:
                duplicates += 1
            else:
                conflicts.append((e, label))
        return fresh, duplicates, conflicts

    def _recorded_keys(self) -> dict:
        """(user, item, event us) -> label of every event in ``feedback_events`` not read yet; the
        files read are remembered, so a call after another process wrote reads only its files."""
        table = self._table("feedback_events")
        files = {e.name for e in self.files.list(table) if e.name.endswith(".parquet") and e.name[:1] not in "._"} - self._read_files
        if not files:
            return {}
        self._read_files |= files
        recorded = read_parquet(self.files, [self.files.join(table, f) for f in sorted(files)],
                                columns=["user_id", "item_id", "event_timestamp", "label"])
        ts = recorded.column("event_timestamp").cast(pa.timestamp("us", "UTC")).cast(pa.int64()).to_pylist()  # µs
        return {(u, i, t): label for u, i, t, label in zip(recorded.column("user_id").to_pylist(), recorded.column("item_id").to_pylist(),
                                                          ts, recorded.column("label").to_pylist())}


def _table(table: C.Table, rows: list[tuple]) -> pa.Table:
    """Rows (tuples in the table's column order) as an Arrow table with the table's own schema. A
    list of timestamps may come as epoch microseconds (cast in Arrow, not a datetime per value)."""
    schema = table.arrow()
    columns = []
    for i, field in enumerate(schema):
        values = [r[i] for r in rows]
        if pa.types.is_list(field.type) and pa.types.is_timestamp(field.type.value_type):
            columns.append(pa.array(values, pa.list_(pa.int64())).cast(field.type))
        else:
            columns.append(pa.array(values, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _key(e: Event) -> tuple[int, int, int]:
    return (e.user_id, e.item_id, _us(e.event_timestamp))


def _service_with(store, view: str) -> str:
    for service in store.list_feature_services():
        if any(p.name == view for p in service.feature_view_projections) and any(p.name == "item_stats" for p in service.feature_view_projections):
            return service.name
    raise IncrementError(f"no feature service serves both {view} and item_stats")

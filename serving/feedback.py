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

- every event is checked with ingest's own rules (``pipelines.features.event_rules``): a bad one refuses the
  whole request with ``InvalidEvents``, naming each event, field and rule (the app answers 422);
- an event's key is (user_id, item_id, event_timestamp), as in ingest: a key already recorded, or
  repeated in the request, is a retry and a no-op (counted as ``duplicates``); the same key with
  the other label is a conflict (``FeedbackError``, 409);
- durable before visible (``serving.feedback_log``): every row a request produces is committed to
  ``<root>/_feedback_log/<batch>/`` before the online store and the tables see it; a failure after
  the commit is finished by the next request (or the next start), before anything else.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.contracts import tables as C
from pipelines.contracts.names import ITEM_STATS_VIEW, USER_SEQUENCE_VIEW, USER_STATS_VIEW
from pipelines.features.event_rules import event_violations
from pipelines.features.item_index import ItemEmbeddingIndex
from pipelines.features.similarity import similarity_batch
from pipelines.features.snapshot import next_history, stamp_after
from pipelines.features.stats import PRIOR_CTR, PRIOR_WEIGHT, running_stats_rows
from serving import feedback_log
from serving.feedback_log import LOG  # noqa: F401 - where committed batches wait
from serving.online import MISSING, OnlineReader

# (view, entity key, stats columns, offline table): the running-stats rule applied per entity
STATS_VIEWS = ((ITEM_STATS_VIEW, "item_id", ("impressions", "clicks", "ctr"), C.ITEM_STATS),
               (USER_STATS_VIEW, "user_id", ("user_impressions", "user_clicks", "user_ctr"), C.USER_STATS))
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


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
    """One event as the feedback path records it; ``event_timestamp`` is timezone-aware."""

    user_id: int
    item_id: int
    event_timestamp: dt.datetime
    label: int


def _us(ts: dt.datetime) -> int:
    return int((ts - EPOCH) / dt.timedelta(microseconds=1))


def _from_us(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=int(us))


class FeedbackWriter:
    """Records events online and offline for one store and table root (``record``); see the module docstring."""

    def __init__(self, store, table_root: str | Path, reader: OnlineReader | None = None):
        self.store = store
        self.root = Path(table_root)
        self.reader = reader or OnlineReader(store, _service_with(store, USER_SEQUENCE_VIEW))
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
        self._read_files: set[str] = set()
        self._keys = self._recorded_keys()  # (user, item, event µs) -> label, for every event feedback recorded

    @property
    def _stats_views(self) -> list[tuple[str, str, tuple[str, str, str]]]:
        """The stats views this store serves: (view, key, columns)."""
        return [(view, key, names) for view, key, names, _ in STATS_VIEWS if view in self.reader.views]

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
        self._keys.update(self._recorded_keys())  # what other server processes recorded since
        events, duplicates = self._new_events(events)
        if not events:
            return {"events": 0, "duplicates": duplicates, "users": 0, "items": 0, "snapshots": 0, "files": {}}
        events = sorted(events, key=lambda e: (e.event_timestamp, e.user_id, e.item_id))
        users = sorted({e.user_id for e in events})
        items = sorted({e.item_id for e in events})
        now = events[-1].event_timestamp
        seq = self.reader.read(USER_SEQUENCE_VIEW, users, now=now)
        stats = {view: self.reader.read(view, users if key == "user_id" else items, now=now) for view, key, _ in self._stats_views}
        self._refuse_late(events, [(seq, users, "user_id")] + [(stats[v], users if k == "user_id" else items, k)
                                                             for v, k, _ in self._stats_views])
        snapshots, sim_rows = self._sequence_rows(events, users, seq)
        tables = {C.EVENTS.name: _table(C.EVENTS, [(e.user_id, e.item_id, e.event_timestamp, e.label) for e in events]),
                  C.USER_SEQUENCE_SNAPSHOTS.name: _table(C.USER_SEQUENCE_SNAPSHOTS, [
                      (u, t, [i for _, i in h], [_from_us(x) for x, _ in h], [x for x, _ in h], len(h)) for u, t, h in snapshots])}
        for view, key, names, table in STATS_VIEWS:
            if view in stats:
                tables[view] = _table(table, self._stats_rows(events, stats[view], key, names))
        similarities = self._similarities(sim_rows)
        if similarities is not None:
            tables[C.TARGET_SIMILARITY.name] = similarities
        tables = {C.FEEDBACK_EVENTS.name: tables[C.EVENTS.name], **tables}
        batch_id = f"feedback-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
        feedback_log.commit(self.root, batch_id, tables)
        for e in events:
            self._keys[_key(e)] = e.label
        written = feedback_log.apply(self.root, batch_id, self.store, self._stats_views)
        return {"events": len(events), "duplicates": duplicates, "users": len(users), "items": len(items),
                "snapshots": len(snapshots), "files": written}

    def recover(self) -> list[str]:
        """Finish every committed batch a failure left behind (``feedback_log.recover``)."""
        return feedback_log.recover(self.root, self.store, self._stats_views)

    # -- the rows a batch writes ------------------------------------------------------------------

    @staticmethod
    def _refuse_late(events: list[Event], checks) -> None:
        """Refuse events older than what is online for their user or item: applying them here would
        rewrite history the online store no longer holds (late data goes through the batch pipeline)."""
        for rows, keys, key in checks:
            first = {}
            for e in events:
                first.setdefault(getattr(e, key), e.event_timestamp)
            for k, status, stamp in zip(keys, rows.status, rows.event_timestamps):
                if status != MISSING and stamp is not None and stamp_after(first[k]) < stamp:
                    raise FeedbackError(f"event for {key.removesuffix('_id')} {k} at {first[k].isoformat()} is older than its online "
                                        f"{rows.view} (stamped {stamp.isoformat()}); late events go through the batch pipeline")

    def _sequence_rows(self, events: list[Event], users: list[int], seq) -> tuple[list, list]:
        """One snapshot per (user, positive time), from the online one (the snapshot rule), and each
        event's history strictly before its time (the rows the similarity rule reads)."""
        history = {user: list(zip(seq.values["hist_ts_us"][n] or [], seq.values["hist_item_ids"][n] or []))
                   for n, user in enumerate(users)}
        snapshots, sim_rows = [], []
        by_user_time = defaultdict(list)
        for e in events:
            by_user_time[(e.user_id, e.event_timestamp)].append(e)
        for (user, ts), group in sorted(by_user_time.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            before = history[user]
            sim_rows += [(e, [i for _, i in before]) for e in group]
            positives = [(_us(ts), e.item_id) for e in group if e.label == 1]
            if positives:
                history[user] = next_history(before, positives, self.max_len)
                snapshots.append((user, stamp_after(ts), list(history[user])))
        return snapshots, sim_rows

    def _stats_rows(self, events: list[Event], online, key: str, names: tuple[str, str, str]) -> list[tuple]:
        """The running-stats rule, counting on from the online row of each key."""
        keys = sorted({getattr(e, key) for e in events})  # the order the online rows were read in
        counted = {k: (online.values[names[0]][n], online.values[names[1]][n]) if online.status[n] != MISSING else (0, 0)
                   for n, k in enumerate(keys)}
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
              "hist_item_ids": h, "hist_len": len(h)} for e, h in sim_rows], schema=C.SIMILARITY_INPUT.arrow())
        sims = pa.Table.from_batches([similarity_batch(batch, index)])
        return sims.append_column("encoder_id", pa.array([encoder_id] * sims.num_rows, pa.string()))

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
        """(user, item, event us) -> label of every event in ``feedback_events`` not read yet; the
        files read are remembered, so a call after another process wrote reads only its files."""
        files = {f.name for f in (self.root / "feedback_events").glob("*.parquet")} - self._read_files
        if not files:
            return {}
        self._read_files |= files
        recorded = pq.ParquetDataset([str(self.root / "feedback_events" / f) for f in sorted(files)]).read(
            columns=["user_id", "item_id", "event_timestamp", "label"])
        ts = recorded.column("event_timestamp").cast(pa.int64()).to_pylist()  # µs
        return {(u, i, t): label for u, i, t, label in zip(recorded.column("user_id").to_pylist(), recorded.column("item_id").to_pylist(),
                                                          ts, recorded.column("label").to_pylist())}


def _table(table: C.Table, rows: list[tuple]) -> pa.Table:
    """Rows (tuples in the table's column order) as an Arrow table with the table's own schema."""
    return pa.table({name: [r[i] for r in rows] for i, name in enumerate(table.names)}, schema=table.arrow())


def _key(e: Event) -> tuple[int, int, int]:
    return (e.user_id, e.item_id, _us(e.event_timestamp))


def _service_with(store, view: str) -> str:
    for service in store.list_feature_services():
        if any(p.name == view for p in service.feature_view_projections) and any(p.name == "item_stats" for p in service.feature_view_projections):
            return service.name
    raise FeedbackError(f"no feature service serves both {view} and item_stats")

"""The served-feature log: what the scorer actually used, one record per ``POST /score``.

A record (``mmfs.core.contracts.tables.REQUEST_LOG``) holds the request id, the time it was scored
as of, the user, the candidates, every feature value the model read with its status (present,
stale, missing), the similarities s_j, the scores, the model and the feature service. ``mmfs
consistency`` joins these records with the offline point-in-time values at each request's time.

Scoring never waits on the log: the request thread hands the scorer's arrays (``Served``, no
copy, no conversion) to a bounded queue with ``put_nowait``; one writer thread turns them into
Arrow and writes a parquet file every ``flush_rows`` records or ``flush_s`` seconds (hidden name,
then one rename). When the queue is full the record is dropped and counted
(``mmfs_request_log_dropped``); a failed write drops its records and is counted too, never
failing a request.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmfs.core.contracts.tables import REQUEST_LOG
from mmfs.online.reader import MISSING_CODE, STATUS_NAMES

log = logging.getLogger("mmfs.serve")
STATUS = np.array(STATUS_NAMES)  # by status code
SWITCH_S = 0.0005  # the GIL switch interval while the writer thread converts records


@dataclass
class Served:
    """One request as the scorer served it; arrays are the scorer's own (C candidates, L history)."""

    request_id: str
    requested_at: dt.datetime
    user_id: int
    model: str
    feature_service: str
    item_ids: list[int]
    scores: np.ndarray  # (C,) probabilities, nan for an error entry
    seq_status: str
    seq_timestamp: dt.datetime | None
    hist_item_ids: list[int]
    user_stats: dict | None  # {"status": ..., feature: value}; None when the service has no user_stats
    item_stats: dict | None  # {"status": (C,) codes, feature: (C,) values}; None without item_stats
    embedding_status: np.ndarray | None  # (C,) codes
    hist_sim: np.ndarray | None  # (C, L) s_j
    hist_sim_mask: np.ndarray | None  # (C, L) where s_j is known


def _lists(rows: list, dtype: pa.DataType, nulls: list | None = None) -> pa.Array:
    """A list column from one numpy array per record (None: a null list), values nullable where
    ``nulls`` (one bool array per record, or None) says; built from flat buffers, no Python loop
    over the values, so the writer thread holds the GIL as little as it can."""
    lengths = np.array([0 if r is None else len(r) for r in rows], np.int32)
    offsets = np.zeros(len(rows) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    present = [r for r in rows if r is not None]
    flat = np.concatenate(present) if present else np.zeros(0)
    mask = None
    if nulls is not None:
        flags = [m for r, m in zip(rows, nulls) if r is not None]
        mask = np.concatenate(flags) if flags else np.zeros(0, bool)
    values = pa.array(flat, type=dtype, mask=mask, from_pandas=False) if len(flat) else pa.array([], type=dtype)
    outer = np.array([r is None for r in rows])
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(outer) if outer.any() else None)


def _matrices(records: list["Served"]) -> pa.Array:
    """``hist_sim`` (list<list<float32>>): per record its (C, L) s_j over the history it used, null where unknown."""
    rows, masks = [], []
    for r in records:
        if r.hist_sim is None:
            rows.append(None)
            masks.append(None)
            continue
        L = len(r.hist_item_ids)
        rows.append(np.ascontiguousarray(r.hist_sim[:, :L]))
        masks.append(~np.asarray(r.hist_sim_mask[:, :L], bool))
    inner_rows = [m for m in rows if m is not None]
    widths = [m.shape[1] for m in inner_rows]
    heights = np.array([0 if m is None else m.shape[0] for m in rows], np.int32)
    inner_offsets = np.zeros(int(heights.sum()) + 1, np.int32)
    np.cumsum(np.repeat(np.array(widths, np.int32), heights[heights > 0]) if inner_rows else np.zeros(0, np.int32),
              out=inner_offsets[1:])
    flat = np.concatenate([m.ravel() for m in inner_rows]) if inner_rows else np.zeros(0, np.float32)
    mask = np.concatenate([m.ravel() for m in masks if m is not None]) if inner_rows else np.zeros(0, bool)
    inner = pa.ListArray.from_arrays(pa.array(inner_offsets), pa.array(flat.astype(np.float32, copy=False), mask=mask))
    outer_offsets = np.zeros(len(rows) + 1, np.int32)
    np.cumsum(heights, out=outer_offsets[1:])
    outer_null = np.array([m is None for m in rows])
    return pa.ListArray.from_arrays(pa.array(outer_offsets), inner, mask=pa.array(outer_null) if outer_null.any() else None)


def _text_columns(schema: pa.Schema) -> list[str]:
    """The parquet paths of the string columns and of the lists of strings (the status columns)."""
    return [f.name for f in schema if pa.types.is_string(f.type)] + \
           [f"{f.name}.list.element" for f in schema if pa.types.is_list(f.type) and pa.types.is_string(f.type.value_type)]


def _arrow(records: list[Served]) -> pa.Table:
    """Records -> one Arrow table in ``REQUEST_LOG``'s schema (on the writer thread)."""
    logged = dt.datetime.now(dt.timezone.utc)
    n = len(records)

    def user(name: str):
        return [None if r.user_stats is None or r.user_stats["status"] == "missing" else float(r.user_stats[name]) for r in records]

    def item(name: str):
        return _lists([None if r.item_stats is None else np.asarray(r.item_stats[name], np.float64) for r in records], pa.float64(),
                      [None if r.item_stats is None else r.item_stats["status"] == MISSING_CODE for r in records])

    def statuses(rows):
        return _lists([None if c is None else STATUS[c] for c in rows], pa.string())

    scores = [np.asarray(r.scores, np.float64) for r in records]
    columns = {
        "request_id": pa.array([r.request_id for r in records], pa.string()),
        "requested_at": pa.array([r.requested_at for r in records], pa.timestamp("us", tz="UTC")),
        "logged_at": pa.array([logged] * n, pa.timestamp("us", tz="UTC")),
        "user_id": pa.array([r.user_id for r in records], pa.int64()),
        "model": pa.array([r.model for r in records], pa.string()),
        "feature_service": pa.array([r.feature_service for r in records], pa.string()),
        "item_ids": _lists([np.asarray(r.item_ids, np.int64) for r in records], pa.int64()),
        "scores": _lists(scores, pa.float64(), [np.isnan(s) for s in scores]),
        "seq_status": pa.array([r.seq_status for r in records], pa.string()),
        "seq_timestamp": pa.array([r.seq_timestamp for r in records], pa.timestamp("us", tz="UTC")),
        "hist_item_ids": _lists([np.asarray(r.hist_item_ids, np.int64) for r in records], pa.int64()),
        "user_stats_status": pa.array([None if r.user_stats is None else r.user_stats["status"] for r in records], pa.string()),
        "user_impressions": pa.array(user("user_impressions"), pa.float64()),
        "user_clicks": pa.array(user("user_clicks"), pa.float64()),
        "user_ctr": pa.array(user("user_ctr"), pa.float64()),
        "item_stats_status": statuses([None if r.item_stats is None else r.item_stats["status"] for r in records]),
        "impressions": item("impressions"),
        "clicks": item("clicks"),
        "ctr": item("ctr"),
        "embedding_status": statuses([r.embedding_status for r in records]),
        "hist_sim": _matrices(records),
    }
    schema = REQUEST_LOG.arrow()
    return pa.table([columns[f.name].cast(f.type) for f in schema], schema=schema)


class RequestLog:
    """The bounded queue and its writer thread (see the module docstring)."""

    def __init__(self, directory: Path, scorer, maxsize: int = 10_000, metrics=None, flush_rows: int = 512, flush_s: float = 1.0):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.model = scorer.model_name
        self.feature_service = scorer.feature_service
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.metrics = metrics
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.dropped = self.written = 0
        self.files = 0
        self._stop = threading.Event()
        scorer.served_hook = self.submit
        self.thread = threading.Thread(target=self._run, name="mmfs-request-log", daemon=True)
        self.thread.start()

    def submit(self, served: Served) -> None:
        """Hand one record to the writer; never blocks: a full queue drops it (counted)."""
        try:
            self.queue.put_nowait(served)
        except queue.Full:
            self._drop(1)

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self.metrics is not None:
            self.metrics.log_dropped.inc(n)

    def _run(self) -> None:
        pending: list[Served] = []
        due = time.monotonic() + self.flush_s
        while not (self._stop.is_set() and self.queue.empty()):
            try:
                pending.append(self.queue.get(timeout=max(0.01, due - time.monotonic())))
            except queue.Empty:
                pass
            if len(pending) >= self.flush_rows or (pending and (time.monotonic() >= due or self._stop.is_set())):
                self._write(pending)
                pending = []
            if time.monotonic() >= due:
                due = time.monotonic() + self.flush_s
        if pending:
            self._write(pending)

    def _write(self, records: list[Served]) -> None:
        switch = sys.getswitchinterval()
        try:
            # While this thread converts in Python, a scoring thread that wants the GIL gets it
            # within 0.5 ms rather than the default 5 ms: the conversion is what showed in p99.
            sys.setswitchinterval(min(switch, SWITCH_S))
            table = _arrow(records)
            name = f"{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}-{self.files:06d}.parquet"
            tmp = self.dir / f".{name}.tmp"
            # Dictionaries only for the text columns, zstd for the rest: with the default (a dictionary
            # tried on every column, snappy) 66 records at C = 1,200 took 150 ms of CPU to write, mostly
            # hist_sim's floats, beside the scorer on 2 cores; this way 40 ms, and 3 MB instead of 8.
            pq.write_table(table, tmp, compression="zstd", use_dictionary=_text_columns(table.schema))
            os.replace(tmp, self.dir / name)
            self.files += 1
            self.written += len(records)
            if self.metrics is not None:
                self.metrics.logged.inc(len(records))
        except Exception:  # noqa: BLE001 - the log never fails serving: counted as dropped, logged with its trace
            log.exception("request log: could not write %d records", len(records))
            self._drop(len(records))
        finally:
            sys.setswitchinterval(switch)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        self._stop.set()
        self.thread.join(timeout)

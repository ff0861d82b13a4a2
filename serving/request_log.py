"""The served-feature log: what the scorer actually used, one record per ``POST /score``.

A record (``pipelines.contracts.tables.REQUEST_LOG``) holds the request id, the time it was scored
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
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.contracts.tables import REQUEST_LOG
from serving.online import MISSING_CODE, STATUS_NAMES

log = logging.getLogger("mmfs.serve")
STATUS = np.array(STATUS_NAMES)  # by status code


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


def _arrow(records: list[Served]) -> pa.Table:
    """Records -> one Arrow table in ``REQUEST_LOG``'s schema (on the writer thread)."""
    logged = dt.datetime.now(dt.timezone.utc)

    def stat(r: Served, name: str):
        return None if r.user_stats is None or r.user_stats["status"] == "missing" else float(r.user_stats[name])

    def item_col(r: Served, name: str):
        if r.item_stats is None:
            return None
        missing = r.item_stats["status"] == MISSING_CODE
        return [None if m else float(v) for v, m in zip(r.item_stats[name].tolist(), missing.tolist())]

    def sims(r: Served):
        if r.hist_sim is None:
            return None
        L = len(r.hist_item_ids)
        return [[float(s) if k else None for s, k in zip(row[:L], known[:L])] for row, known in zip(r.hist_sim.tolist(), r.hist_sim_mask.tolist())]

    columns = {
        "request_id": [r.request_id for r in records],
        "requested_at": [r.requested_at for r in records],
        "logged_at": [logged] * len(records),
        "user_id": [r.user_id for r in records],
        "model": [r.model for r in records],
        "feature_service": [r.feature_service for r in records],
        "item_ids": [r.item_ids for r in records],
        "scores": [[None if np.isnan(s) else float(s) for s in r.scores.tolist()] for r in records],
        "seq_status": [r.seq_status for r in records],
        "seq_timestamp": [r.seq_timestamp for r in records],
        "hist_item_ids": [r.hist_item_ids for r in records],
        "user_stats_status": [None if r.user_stats is None else r.user_stats["status"] for r in records],
        "user_impressions": [stat(r, "user_impressions") for r in records],
        "user_clicks": [stat(r, "user_clicks") for r in records],
        "user_ctr": [stat(r, "user_ctr") for r in records],
        "item_stats_status": [None if r.item_stats is None else STATUS[r.item_stats["status"]].tolist() for r in records],
        "impressions": [item_col(r, "impressions") for r in records],
        "clicks": [item_col(r, "clicks") for r in records],
        "ctr": [item_col(r, "ctr") for r in records],
        "embedding_status": [None if r.embedding_status is None else STATUS[r.embedding_status].tolist() for r in records],
        "hist_sim": [sims(r) for r in records],
    }
    return pa.table(columns, schema=REQUEST_LOG.arrow())


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

    def new_id(self) -> str:
        return uuid.uuid4().hex

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
        try:
            table = _arrow(records)
            name = f"{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}-{self.files:06d}.parquet"
            tmp = self.dir / f".{name}.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, self.dir / name)
            self.files += 1
            self.written += len(records)
            if self.metrics is not None:
                self.metrics.logged.inc(len(records))
        except Exception:  # noqa: BLE001 - the log never fails serving: counted as dropped, logged with its trace
            log.exception("request log: could not write %d records", len(records))
            self._drop(len(records))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        self._stop.set()
        self.thread.join(timeout)

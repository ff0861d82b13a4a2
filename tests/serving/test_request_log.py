"""The served-feature log never blocks or fails scoring: a full queue drops records and counts them,
a failed write is counted too, and what is written has the contract's schema."""
import datetime as dt
import threading
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
from prometheus_client import generate_latest

from mmfs.core.contracts.tables import REQUEST_LOG
from mmfs.serving.metrics import Metrics
from mmfs.serving.request_log import RequestLog, Served

AT = dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)


def served(n: int) -> Served:
    return Served(f"r{n}", AT, 7, "dmf", "ctr_dmf_v1", [1, 2], np.array([0.25, np.nan]), "present", AT, [5, 6],
                  {"status": "present", "user_impressions": 3, "user_clicks": 1, "user_ctr": 0.4},
                  {"status": np.array([0, 2], np.int8), "impressions": np.array([4.0, 0.0]), "clicks": np.array([1.0, 0.0]),
                   "ctr": np.array([0.3, 0.0])},
                  np.array([0, 1], np.int8), np.array([[0.5, -0.25], [0.0, 0.0]], np.float32), np.array([[True, True], [False, False]]))


def scorer():
    return SimpleNamespace(model_name="dmf", feature_service="ctr_dmf_v1", served_hook=None)


def test_records_are_written_in_the_contracts_schema(tmp_path):
    log = RequestLog(tmp_path, scorer(), flush_rows=2)
    for n in range(5):
        log.submit(served(n))
    log.close()
    table = pq.ParquetDataset(sorted(str(p) for p in tmp_path.glob("*.parquet"))).read()
    assert table.schema.equals(REQUEST_LOG.arrow(), check_metadata=False) and table.num_rows == 5 == log.written
    row = table.slice(0, 1).to_pylist()[0]
    assert row["scores"] == [0.25, None] and row["item_stats_status"] == ["present", "missing"] and row["impressions"] == [4.0, None]
    assert row["embedding_status"] == ["present", "stale"] and row["hist_sim"] == [[0.5, -0.25], [None, None]]


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path, monkeypatch):
    metrics = Metrics()
    release = threading.Event()
    log = RequestLog(tmp_path, scorer(), maxsize=2, metrics=metrics, flush_rows=1)
    real = log._write
    monkeypatch.setattr(log, "_write", lambda records: (release.wait(10), real(records)))
    for n in range(10):  # the writer holds one, the queue two: the rest are dropped at once
        log.submit(served(n))
    assert log.dropped >= 7
    release.set()
    log.close()
    assert log.written + log.dropped == 10
    assert f"mmfs_request_log_dropped_total {float(log.dropped)}" in generate_latest(metrics.registry).decode()


def test_a_failed_write_is_counted_and_scoring_goes_on(tmp_path, monkeypatch):
    log = RequestLog(tmp_path / "log", scorer(), flush_rows=1)
    monkeypatch.setattr("mmfs.serving.request_log.pq.write_table", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    log.submit(served(0))
    log.close()
    assert (log.written, log.dropped) == (0, 1)


def test_only_text_columns_are_dictionary_encoded_and_all_are_zstd(tmp_path):
    """A dictionary tried on the s_j floats tripled the writer's CPU beside the scorer."""
    log = RequestLog(tmp_path, scorer(), flush_rows=3)
    for n in range(3):
        log.submit(served(n))
    log.close()
    meta = pq.ParquetFile(next(tmp_path.glob("*.parquet"))).metadata.row_group(0)
    columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert {c.compression for c in columns.values()} == {"ZSTD"}
    dictionary = {path.split(".")[0] for path, c in columns.items() if any("DICTIONARY" in e for e in c.encodings)}
    assert dictionary == {"request_id", "model", "feature_service", "seq_status", "user_stats_status", "item_stats_status",
                          "embedding_status"}, dictionary

"""Materialise, read online with TTL, and check online/offline parity on SQLite and real Redis."""
import datetime as dt

import pytest

from mmfs.store import feast_store
from mmfs.online.reader import MISSING, PRESENT, STALE, OnlineReader
from mmfs.checks.parity import run_parity
from tests.support.feast_tables import copy_repo
from tests.support.redis_server import redis_server

AFTER_ALL = dt.datetime(2020, 8, 1, tzinfo=dt.timezone.utc)


def applied(tmp_path, root, config, port=None):
    repo = copy_repo(tmp_path)
    if port is not None:
        path = repo / "feature_store.redis.yaml"
        path.write_text(path.read_text().replace("127.0.0.1:6379", f"127.0.0.1:{port}"))
    feast_store.apply(config, repo, root)
    first = feast_store.materialize(config, repo, root, end=AFTER_ALL)
    # First run: from the earliest row, not Feast's default of wall-clock now - ttl.
    assert [r.split()[0] for r in first["runs"]] == ["materialize"] and first["runs"][0].split()[1] == "2019-11-30T23:59:59.000000"  # earliest row - 1 s
    return feast_store.open_store(config, repo, root), repo


def check_store(store):
    reader = OnlineReader(store, "ctr_dmf_v1")
    assert reader.offline_only == ["target_similarity"]
    seq = reader.read("user_sequence", [1, 2, 3, 999], now=AFTER_ALL)
    assert seq.status == [PRESENT, PRESENT, PRESENT, MISSING]
    assert seq.values["hist_item_ids"][0] == [10, 11, 12, 14]
    assert seq.values["hist_ts_us"][0][2] == 1577836800000001  # microseconds survive the online store
    emb = reader.read("item_embeddings", [10, 13], now=AFTER_ALL)
    assert emb.status == [PRESENT, MISSING] and emb.values["mm_emb"][0] == pytest.approx([-1.0, 0.0], abs=1e-6)

    # The fast read (mmfs.online.rows) answers what Feast's own online_read answers, row for row:
    # every key of every online view, absent keys and a key asked twice included.
    keys = [*range(0, 20), 999, 10, 1]
    for view, (_, features) in reader.views.items():
        ours, feasts = reader.read_rows(view, keys), reader.feast_rows(view, keys)
        assert sum(stamp is not None for stamp, _ in ours) >= 3, view
        for key, (stamp, data), (their_stamp, theirs) in zip(keys, ours, feasts):
            assert stamp == their_stamp, (view, key)
            assert (data is None) == (theirs is None), (view, key)
            if data is not None:
                assert {f: data[f] for f in features} == {f: theirs.get(f, type(data[f])()) for f in features}, (view, key)

    # TTL: twenty years on the values are still in the store but reported stale, never fresh.
    later = reader.read("user_sequence", [1], now=AFTER_ALL + dt.timedelta(days=365 * 20))
    assert later.status == [STALE] and later.values["hist_item_ids"][0] == [10, 11, 12, 14] and later.fresh("hist_item_ids") == [None]

    report = run_parity(store, "ctr_dmf_v1", AFTER_ALL, sample=50)
    assert report["ok"], report
    by_feature = {f["feature"]: f for f in report["features"]}
    assert {"user_sequence:hist_item_ids", "item_embeddings:mm_emb", "item_stats:ctr", "request_time:hist_sim"} <= by_feature.keys()
    assert by_feature["request_time:hist_sim"]["compared"] == report["pairs"] >= 5
    assert by_feature["request_time:hist_sim"]["both_present"] >= 2 and by_feature["item_embeddings:mm_emb"]["both_present"] >= 4

    # Parity can fail: one corrupted online value is caught and named.
    import pandas as pd

    store.write_to_online_store("item_stats", pd.DataFrame({
        "item_id": [14], "impressions": [999], "clicks": [1], "ctr": [0.5],
        "event_timestamp": [pd.Timestamp("2020-07-31", tz="UTC")]}))  # newer: Redis ignores older writes
    broken = run_parity(store, "ctr_dmf_v1", AFTER_ALL, sample=50)
    by_feature = {f["feature"]: f for f in broken["features"]}
    assert not broken["ok"] and by_feature["item_stats:impressions"]["mismatch_rate"] > 0
    assert by_feature["item_stats:impressions"]["examples"][0]["online"] == 999
    assert by_feature["user_sequence:hist_item_ids"]["mismatch_rate"] == 0


def test_sqlite_materialise_ttl_and_parity(tiny_root, tmp_path):
    root, _ = tiny_root
    store, repo = applied(tmp_path, root, "duckdb")
    check_store(store)
    again = feast_store.materialize("duckdb", repo, root, end=AFTER_ALL + dt.timedelta(days=1))
    assert [r.split()[0] for r in again["runs"]] == ["materialize-incremental"]


@pytest.mark.integration
def test_redis_materialise_ttl_and_parity(tiny_root, tmp_path):
    root, _ = tiny_root
    with redis_server(tmp_path) as port:
        check_store(applied(tmp_path, root, "redis", port)[0])

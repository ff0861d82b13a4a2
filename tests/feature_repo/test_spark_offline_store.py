"""The Spark offline store path end to end on tiny data: apply, historical join, materialise, read."""
import datetime as dt

import pytest

from mmfs.store import feast_store, training_set
from mmfs.online.reader import PRESENT, OnlineReader
from tests.support.feast_tables import copy_repo


@pytest.mark.integration
def test_spark_offline_store_matches_the_duckdb_join(tiny_root, tmp_path, spark):
    root, _ = tiny_root
    repo = copy_repo(tmp_path)
    feast_store.apply("spark", repo, root)  # features.py declares SparkSources under this config
    store = feast_store.open_store("spark", repo, root)
    assert type(store.get_feature_view("user_sequence").batch_source).__name__ == "SparkSource"

    entity = training_set.read_entity_frame(root / "events")
    views = training_set.service_views(store, "ctr_din_v1")
    via_spark = training_set.feast_join(store, "ctr_din_v1", entity, views).to_pylist()
    ours = training_set.duckdb_join(views, entity).to_pylist()
    def key(r):
        t = r["event_timestamp"]
        t = t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)  # Spark hands back naive UTC
        return r["user_id"], r["item_id"], round(t.timestamp() * 1_000_000)

    via_spark = {key(r): r for r in via_spark}
    assert len(via_spark) == len(ours) == entity.num_rows
    for row in ours:
        other = via_spark[key(row)]
        for column in ("hist_item_ids", "hist_ts_us", "impressions", "clicks"):
            assert row[column] == other[column] or (row[column] is None and other[column] in (None, [])), (key(row), column)
        assert (row["ctr"] is None) == (other["ctr"] is None or other["ctr"] != other["ctr"])

    feast_store.materialize("spark", repo, root, end=dt.datetime(2020, 8, 1, tzinfo=dt.timezone.utc))
    seq = OnlineReader(store, "ctr_din_v1").read("user_sequence", [1], now=dt.datetime(2020, 8, 1, tzinfo=dt.timezone.utc))
    assert seq.status == [PRESENT] and seq.values["hist_item_ids"] == [[10, 11, 12, 14]]

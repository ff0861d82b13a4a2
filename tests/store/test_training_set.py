"""Training sets: exact point-in-time values on adversarial rows, both engines, splits, bad input."""
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet  # noqa: F401 - pa.parquet
import pytest

from mmfs.store import feast_store, training_set
from mmfs.store.training_set import EntityFrameError, SplitPoints
from tests.support.feast_tables import EVENTS


@pytest.fixture(scope="module")
def store(applied_repo):
    repo, root = applied_repo
    return feast_store.open_store("duckdb", repo, root)


@pytest.fixture(scope="module")
def rows(store, applied_repo):
    _, root = applied_repo
    views = training_set.service_views(store, "ctr_dmf_v1")
    entity = training_set.read_entity_frame(root / "events")
    ours = training_set.duckdb_join(views, entity, "inline").to_pylist()
    feast = training_set.feast_join(store, "ctr_dmf_v1", entity, views, "inline").to_pylist()
    key = lambda r: (r["user_id"], r["item_id"], r["event_timestamp"])  # noqa: E731
    return {key(r): r for r in ours}, {key(r): r for r in feast}


def at(text):
    return pd.Timestamp(text, tz="UTC").to_pydatetime()


def angle_of(vec):
    return None if vec is None else round(math.degrees(math.atan2(vec[1], vec[0])))


def test_every_event_becomes_exactly_one_row(rows):
    ours, feast = rows
    assert len(ours) == len(feast) == len(EVENTS)


def test_sequence_strictly_before_the_event_ties_included(rows):
    ours, _ = rows
    assert ours[(1, 10, at("2020-01-01"))]["hist_item_ids"] is None  # nothing before: no snapshot
    assert ours[(1, 11, at("2020-01-01"))]["hist_item_ids"] is None  # same-instant positive unseen
    assert ours[(1, 12, at("2020-01-01 00:00:00.000001"))]["hist_item_ids"] == [10, 11]
    assert ours[(1, 12, at("2020-01-01 00:00:00.000001"))]["hist_ts_us"] == [1577836800000000] * 2
    assert ours[(1, 14, at("2020-01-03"))]["hist_item_ids"] == [10, 11, 12]


def test_item_stats_count_only_earlier_events(rows):
    ours, _ = rows
    assert ours[(2, 10, at("2020-01-01"))]["impressions"] is None  # the click at the same instant is not counted
    assert (ours[(2, 11, at("2020-01-02 00:00:00.000001"))]["impressions"], ours[(2, 11, at("2020-01-02 00:00:00.000001"))]["clicks"]) == (1, 1)
    assert (ours[(3, 10, at("2020-07-01"))]["impressions"], ours[(3, 10, at("2020-07-01"))]["clicks"]) == (3, 2)


def test_user_stats_count_only_the_users_earlier_events(rows):
    ours, _ = rows
    first = ours[(1, 10, at("2020-01-01"))]
    assert first["user_impressions"] is None  # nothing before; not even the same-instant event on item 11
    assert ours[(1, 11, at("2020-01-01"))]["user_impressions"] is None
    later = ours[(1, 12, at("2020-01-01 00:00:00.000001"))]  # one microsecond later: both earlier events count
    assert (later["user_impressions"], later["user_clicks"]) == (2, 2)
    assert later["user_ctr"] == pytest.approx((2 + 0.5 * 2) / (2 + 2))
    assert (ours[(1, 14, at("2020-01-03"))]["user_impressions"], ours[(1, 14, at("2020-01-03"))]["user_clicks"]) == (4, 3)
    assert (ours[(2, 11, at("2020-01-02 00:00:00.000001"))]["user_impressions"], ours[(2, 11, at("2020-01-02 00:00:00.000001"))]["user_clicks"]) == (1, 0)


def test_running_stats_never_expire(store):
    """A row 25 years after the last event still gets the counters (other views age out by TTL)."""
    views = training_set.service_views(store, "ctr_dmf_v1")
    entity = pa.table({"user_id": pa.array([3], pa.int64()), "item_id": pa.array([10], pa.int64()),
                       "event_timestamp": pa.array([at("2045-07-01")], pa.timestamp("us", tz="UTC")), "label": pa.array([0], pa.int32())})
    row = training_set.duckdb_join(views, entity, "inline").to_pylist()[0]
    assert (row["impressions"], row["clicks"]) == (4, 2) and (row["user_impressions"], row["user_clicks"]) == (2, 1)
    assert row["hist_item_ids"] is None  # the sequence view's 10-year TTL still applies


def test_embeddings_honour_created_timestamp(rows):
    ours, feast = rows
    # Version 90 deg has event time Jan 2 but was written 1us later: a row at exactly Jan 2 sees 0 deg.
    assert angle_of(ours[(1, 13, at("2020-01-02"))]["mm_emb"]) is None  # item 13 never had one
    assert angle_of(ours[(2, 11, at("2020-01-02 00:00:00.000001"))]["mm_emb"]) == 45
    # The 180 deg back-fill (event Feb 1, written June 1) must not reach a March row...
    assert angle_of(ours[(3, 10, at("2020-03-01"))]["mm_emb"]) == 90
    # ...nor through Feast's own join, with filter_by_created_timestamp (tests/feature_repo/test_point_in_time.py):
    assert angle_of(feast[(3, 10, at("2020-03-01"))]["mm_emb"]) == 90
    assert angle_of(ours[(3, 10, at("2020-07-01"))]["mm_emb"]) == 180


def test_similarities_use_the_embeddings_known_at_the_row_time(rows):
    ours, _ = rows
    # target 14 (30 deg) at Jan 3 against history 10 (90 deg by then), 11 (45), 12 (60).
    assert ours[(1, 14, at("2020-01-03"))]["hist_sim"] == pytest.approx([0.5, math.cos(math.radians(15)), math.cos(math.radians(30))], abs=1e-6)
    row13 = ours[(1, 13, at("2020-01-02"))]
    assert row13["target_has_emb"] is False and row13["hist_sim"] == [None, None, None]


def test_both_engines_give_the_same_rows(rows):
    ours, feast = rows
    assert ours.keys() == feast.keys()
    for key in ours.keys():
        a, b = ours[key], feast[key]
        assert a.keys() == b.keys()
        for column in a:
            x, y = a[column], b[column]
            if isinstance(x, list) and x and isinstance(x[0], float):
                assert np.allclose(np.array(x, dtype=float), np.array(y, dtype=float), equal_nan=True, atol=0), (key, column)
            elif isinstance(x, float) and math.isnan(x):
                assert y is None or math.isnan(y), (key, column)
            else:
                assert x == y, (key, column, x, y)


def test_build_writes_splits_manifest_and_saved_dataset(store, applied_repo, tmp_path):
    _, root = applied_repo
    split = SplitPoints(at("2020-01-02"), at("2020-03-01"))
    result = training_set.build(store, "ctr_dmf_v1", root / "events", tmp_path / "dmf_set", split=split)
    manifest = json.loads((tmp_path / "dmf_set" / "manifest.json").read_text())
    assert {k: v["rows"] for k, v in manifest["splits"].items()} == {"train": 4, "valid": 3, "test": 2}
    assert manifest["splits"]["train"]["positive_rate"] == pytest.approx(3 / 4)
    assert manifest["feature_service"] == "ctr_dmf_v1" and manifest["vector_fields_by_reference"] == ["item_embeddings:mm_emb"]
    assert manifest["splits"]["test"]["min_event_timestamp"].startswith("2020-03-01")
    for name, stats in manifest["splits"].items():  # the writer's statistics agree with the files as read back
        part = pa.concat_tables([pa.parquet.read_table(tmp_path / "dmf_set" / f) for f in stats["files"]])
        assert part.num_rows == stats["rows"] and pc.sum(part["label"]).as_py() == stats["positives"]
        assert stats["rows_without_view"] == {"item_embeddings": part["has_image"].null_count, "item_stats": part["impressions"].null_count,
                                              "user_sequence": part["hist_len"].null_count, "user_stats": part["user_impressions"].null_count}
    saved = store.get_saved_dataset("dmf_set").to_df()
    assert len(saved) == len(EVENTS) and "mm_emb" not in saved.columns and "hist_sim" not in saved.columns
    assert manifest["history"] == "reference" and manifest["request_time_fields"] == ["target_similarity:hist_sim", "target_similarity:target_has_emb"]
    assert manifest["list_fields_by_reference"] == {"user_sequence": {"key": "user_sequence__event_timestamp", "fields": ["hist_item_ids", "hist_ts_us"]}}
    # the snapshot a row names is the newest stamped at or before its time (positives strictly before it)
    written = pa.concat_tables([pa.parquet.read_table(f) for f in sorted((tmp_path / "dmf_set").glob("split=*/*.parquet"))]).to_pylist()
    keys = {(r["user_id"], r["item_id"], r["event_timestamp"]): r["user_sequence__event_timestamp"] for r in written}
    assert keys[(1, 12, at("2020-01-01 00:00:00.000001"))] == at("2020-01-01 00:00:00.000001")
    assert keys[(1, 10, at("2020-01-01"))] is None  # no positive strictly before: no snapshot
    assert result.manifest["entity_rows"] == len(EVENTS)

    # A failing rebuild leaves the last good output in place.
    bad = pa.table({"user_id": [1], "item_id": [10], "event_timestamp": pa.array([None], pa.timestamp("us", tz="UTC")), "label": [1]})
    with pytest.raises(EntityFrameError, match="null event_timestamp"):
        training_set.build(store, "ctr_dmf_v1", bad, tmp_path / "dmf_set", split=split)
    assert json.loads((tmp_path / "dmf_set" / "manifest.json").read_text())["built_at"] == manifest["built_at"]


def test_entity_frame_errors_name_the_problem():
    good = {"user_id": [1, 1], "item_id": [10, 10], "label": [1, 1]}
    naive = pd.DataFrame({**good, "event_timestamp": [pd.Timestamp("2020-01-01")] * 2})
    with pytest.raises(EntityFrameError, match="naive"):
        training_set.read_entity_frame(naive)
    with pytest.raises(EntityFrameError, match=r"lacks column\(s\) \['label'\]"):
        training_set.read_entity_frame(naive.drop(columns=["label"]))
    bad_label = pd.DataFrame({**good, "label": [1, 2], "event_timestamp": [pd.Timestamp("2020-01-01", tz="UTC")] * 2})
    with pytest.raises(EntityFrameError, match=r"label not in \{0, 1\}, e.g. rows \[1\]"):
        training_set.read_entity_frame(bad_label)


def test_a_split_written_short_of_its_entity_rows_is_an_error(tmp_path):
    out = tmp_path.resolve()
    written = [{"filename": str(out / "split=train" / "data_0.parquet"), "count": 3, "column_statistics": {}, "partition_keys": {"split": "train"}}]
    entity = {"train": {"rows": 4, "positives": 1, "min": None, "max": None}}
    with pytest.raises(EntityFrameError, match="split train: wrote 3 rows for 4 entity rows"):
        training_set._split_stats(out, written, entity, [])
    entity["train"]["rows"] = 3
    assert training_set._split_stats(out, written, entity, [])["train"]["files"] == ["split=train/data_0.parquet"]


def test_duplicate_entity_rows_are_kept_and_counted(store):
    views = training_set.service_views(store, "ctr_din_v1")
    dup = pd.DataFrame({"user_id": [1, 1, 7], "item_id": [14, 14, 999], "label": [1, 1, 0],
                        "event_timestamp": [pd.Timestamp("2020-01-03", tz="UTC")] * 3})
    entity = training_set.read_entity_frame(dup)
    got = training_set.duckdb_join(views, entity).to_pylist()
    assert len(got) == 3 and got[0] == got[1] and got[0]["hist_item_ids"] == [10, 11, 12]
    # unknown user and item: kept, features null
    assert got[2]["hist_item_ids"] is None and got[2]["impressions"] is None
    assert training_set.count_duplicates(entity) == 1
    assert training_set.count_duplicates(entity.slice(1)) == 0  # every row apart: the row hashes alone answer


def test_a_service_with_embeddings_over_a_table_without_an_encoder_id_is_refused(tiny_root, tmp_path):
    """An unreadable or empty encoder identity used to become {} in the training set, and the
    checkpoint then matched any store. Now the build stops, naming the file."""
    import json
    import shutil

    from mmfs.store.repo import init_repo

    root, _ = tiny_root
    tables = tmp_path / "tables"
    shutil.copytree(root, tables, ignore=shutil.ignore_patterns("_feast", "encoders.yaml"))
    meta = tables / "item_embeddings" / "_mmfs_meta.json"
    meta.write_text(json.dumps({"job": "tests", "encoder_identity": {"mm_dim": 2, "text": {"dim": 1}, "image": {"dim": 3}}}))  # no id
    repo = init_repo(tmp_path / "repo")
    feast_store.apply("duckdb", repo, tables)
    store = feast_store.open_store("duckdb", repo, tables)
    with pytest.raises(training_set.EncoderIdentityError, match="records no encoder id"):
        training_set.build(store, "ctr_dmf_v1", tables / "events", tmp_path / "set", saved_dataset=False)
    meta.write_text("{not json")
    with pytest.raises(training_set.EncoderIdentityError, match="cannot be read"):
        training_set.build(store, "ctr_dmf_v1", tables / "events", tmp_path / "set", saved_dataset=False)
    assert not (tmp_path / "set").exists()
    built = training_set.build(store, "ctr_din_v1", tables / "events", tmp_path / "din", saved_dataset=False)  # no embeddings: fine
    assert built.manifest["encoder_identity"] == {}

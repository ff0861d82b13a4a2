"""The FuxiCTR export holds the training set's rows exactly, versions and ties included."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmfs.model.export_fuxictr import ExportMismatch, check_export, export
from mmfs.store import feast_store, training_set
from mmfs.store.training_set import SplitPoints


def at(text):
    return pd.Timestamp(text, tz="UTC").to_pydatetime()


@pytest.fixture(scope="module")
def exported(applied_repo, tmp_path_factory):
    repo, root = applied_repo
    out = tmp_path_factory.mktemp("sets") / "dmf"
    # train: Jan 1, valid: Jan 2 - Feb, test: Mar on (every split has rows)
    training_set.build(feast_store.open_store("duckdb", repo, root), "ctr_dmf_v1", root / "events", out,
                       split=SplitPoints(at("2020-01-02"), at("2020-03-01")), saved_dataset=False)
    return out, export(out, tmp_path_factory.mktemp("fuxictr") / "tiny")


def test_export_equals_the_training_set_row_for_row(exported):
    ts, e = exported
    assert check_export(ts, e) == e.rows and sum(e.rows.values()) == 9 and all(e.rows.values())
    rows = pd.concat([pd.read_parquet(e.root / f"{s}.parquet") for s in ("train", "valid", "test")])
    assert rows.dtypes.map(lambda t: t == np.int64).all()  # FuxiCTR's loader stacks int64 columns only
    seqs = pq.read_table(e.root / "user_info.parquet").column("full_item_seq").to_pylist()
    info = pd.read_parquet(e.root / "item_info.parquet")
    assert len(seqs) == 9 and info["item_index"].tolist() == list(range(len(info)))  # iloc == item_index


def test_each_row_points_at_the_embedding_version_of_its_time(exported):
    ts, e = exported
    info = pd.read_parquet(e.root / "item_info.parquet")
    test = pd.read_parquet(e.root / "test.parquet")
    # the export keeps the training set's file order (which is not time order), so its rows are
    # paired with the training set's own event timestamps
    times = pd.concat([pd.read_parquet(f) for f in sorted((ts / "split=test").glob("*.parquet"))])["event_timestamp"]
    assert len(times) == len(test)
    mine = test.user_id.to_numpy() == 3
    rows = sorted(zip(times.to_numpy()[mine], test.item_index.to_numpy()[mine]))
    # user 3 rates item 10 on Mar 1 (sees the 90 deg version: the 180 deg back-fill was written in
    # June) and on Jul 1 (sees the back-fill)
    angles = [round(float(np.degrees(np.arctan2(v[1], v[0])))) for v in info.loc[[i for _, i in rows], "mm_emb"]]
    assert angles == [90, 180]


def test_a_tampered_export_is_caught(exported, tmp_path):
    ts, e = exported
    seqs = pq.read_table(e.root / "user_info.parquet")
    lists = seqs.column("full_item_seq").to_pylist()
    longest = max(range(len(lists)), key=lambda r: len(lists[r]))
    original = lists[longest]
    lists[longest] = list(reversed(original))  # same items, wrong order
    pq.write_table(pa.table({"full_item_seq": pa.array(lists, pa.list_(pa.int64()))}), e.root / "user_info.parquet")
    try:
        with pytest.raises(ExportMismatch, match="history"):
            check_export(ts, e)
    finally:
        lists[longest] = original
        pq.write_table(pa.table({"full_item_seq": pa.array(lists, pa.list_(pa.int64()))}), e.root / "user_info.parquet")
    train = pq.read_table(e.root / "train.parquet").to_pandas()
    train.loc[0, "label"] = 1 - train.loc[0, "label"]
    pq.write_table(pa.Table.from_pandas(train, preserve_index=False), e.root / "train.parquet")
    with pytest.raises(ExportMismatch, match="labels differ"):
        check_export(ts, e)

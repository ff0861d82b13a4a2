"""The training-set loader: streamed row groups, masks, point-in-time vector lookups, sharding."""
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from mmfs.model.data import LoaderConfig, TrainingSetDataset, pad_lists
from mmfs.store import feast_store, training_set
from mmfs.store.training_set import SplitPoints
from tests.support.feast_tables import EVENTS


def at(text):
    import pandas as pd

    return pd.Timestamp(text, tz="UTC").to_pydatetime()


@pytest.fixture(scope="module")
def dmf_set(applied_repo, tmp_path_factory):
    repo, root = applied_repo
    store = feast_store.open_store("duckdb", repo, root)
    out = tmp_path_factory.mktemp("sets") / "dmf"
    training_set.build(store, "ctr_dmf_v1", root / "events", out, split=SplitPoints(at("2030-01-01"), at("2030-01-02")),
                       saved_dataset=False)
    return out


def test_pad_lists_keeps_the_newest_and_masks_nulls():
    column = pa.array([[1, 2, 3], None, [], [4, None]], pa.list_(pa.int64()))
    values, mask = pad_lists(column, 2, np.int64)
    assert values.tolist() == [[2, 3], [0, 0], [0, 0], [4, 0]]
    assert mask.tolist() == [[True, True], [False, False], [False, False], [True, False]]


def test_batches_cover_every_row_once_with_point_in_time_vectors(dmf_set):
    data = TrainingSetDataset(dmf_set, LoaderConfig(split="train", batch_size=4, max_len=3, shuffle=False))
    batches = list(data)
    rows = sum(len(b["label"]) for b in batches)
    assert rows == len(EVENTS) == data.rows
    batch = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    index = {(u, i, t): n for n, (u, i, t) in enumerate(zip(batch["user_id"].tolist(), batch["item_id"].tolist(), batch["event_us"].tolist()))}
    us = lambda text: int(at(text).timestamp() * 1_000_000)  # noqa: E731
    row = index[(1, 14, us("2020-01-03"))]
    assert batch["hist_item_ids"][row].tolist() == [10, 11, 12] and batch["hist_mask"][row].all()
    # history item 10 as of Jan 3 is the 90 deg version; target 14 is 30 deg
    assert batch["hist_mm_emb"][row, 0].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    assert batch["mm_emb"][row].tolist() == pytest.approx([math.cos(math.radians(30)), 0.5], abs=1e-6)
    assert batch["hist_sim"][row].tolist() == pytest.approx([0.5, math.cos(math.radians(15)), math.cos(math.radians(30))], abs=1e-6)
    # the March row must not see the back-fill written in June
    march = index[(3, 10, us("2020-03-01"))]
    assert batch["mm_emb"][march].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    # unknown target embedding (item 13): found false, zeros, similarities masked
    unknown = index[(1, 13, us("2020-01-02"))]
    assert not batch["mm_emb_found"][unknown] and not batch["hist_sim_mask"][unknown].any()
    # cold user: empty masked history
    cold = index[(1, 10, us("2020-01-01"))]
    assert not batch["hist_mask"][cold].any() and batch["hist_item_ids"][cold].tolist() == [0, 0, 0]
    assert batch["dense"].shape == (len(EVENTS), 4) and batch["user_dense"].shape == (len(EVENTS), 4)


def test_workers_and_ranks_share_row_groups_without_overlap(applied_repo, tmp_path):
    repo, root = applied_repo
    out = tmp_path / "small_groups"
    training_set.build(feast_store.open_store("duckdb", repo, root), "ctr_dmf_v1", root / "events", out,
                       split=SplitPoints(at("2030-01-01"), at("2030-01-02")), saved_dataset=False)
    for path in (out / "split=train").glob("*.parquet"):  # DuckDB rounds row groups up to 2048 rows
        pq.write_table(pq.read_table(path), path, row_group_size=2)
    data = [TrainingSetDataset(out, LoaderConfig(batch_size=2, max_len=3, rank=r, world_size=2, seed=3)) for r in (0, 1)]
    assert len(data[0].row_groups) == 5
    seen = []
    for d in data:
        for b in DataLoader(d, batch_size=None, num_workers=0):
            seen += list(zip(b["user_id"].tolist(), b["item_id"].tolist(), b["event_us"].tolist()))
    assert len(seen) == len(set(seen)) == len(EVENTS)
    assert 0 < len(list(data[1]._my_row_groups())) < len(data[1].row_groups)


def test_embedding_index_treats_null_and_empty_vectors_as_no_version(tmp_path):
    from mmfs.model.data import load_embedding_index

    ts = pa.array([at("2020-01-01")] * 3, pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"item_id": [1, 2, 3], "event_timestamp": ts, "created_timestamp": ts,
                             "image_emb": pa.array([None, [], [1.0, 2.0]], pa.list_(pa.float32()))}), tmp_path / "part-0.parquet")
    index = load_embedding_index(tmp_path, "image_emb")
    vectors, found = index.vectors_at(np.array([1, 2, 3]), np.full(3, 1_700_000_000_000_000))
    assert index.dim == 2 and found.tolist() == [False, False, True] and vectors[2].tolist() == [1.0, 2.0]
    pq.write_table(pa.table({"item_id": [1], "event_timestamp": ts[:1], "created_timestamp": ts[:1],
                             "image_emb": pa.array([None], pa.list_(pa.float32()))}), tmp_path / "part-0.parquet")
    empty = load_embedding_index(tmp_path, "image_emb")  # no images at all (MovieLens)
    vectors, found = empty.vectors_at(np.array([1, 2]), np.full(2, 1_700_000_000_000_000))
    assert empty.dim == 0 and vectors.shape == (2, 0) and not found.any()


@pytest.fixture(scope="module")
def inline_set(applied_repo, tmp_path_factory):
    repo, root = applied_repo
    out = tmp_path_factory.mktemp("sets") / "dmf_inline"
    training_set.build(feast_store.open_store("duckdb", repo, root), "ctr_dmf_v1", root / "events", out,
                       split=SplitPoints(at("2030-01-01"), at("2030-01-02")), saved_dataset=False, history="inline")
    return out


def _all_rows(path, max_len=3):
    batches = list(TrainingSetDataset(path, LoaderConfig(split="train", batch_size=3, max_len=max_len, shuffle=False)))
    batch = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    order = np.lexsort((batch["item_id"].numpy(), batch["event_us"].numpy(), batch["user_id"].numpy()))
    return {k: v[torch.from_numpy(order)] for k, v in batch.items()}


@pytest.mark.parametrize("max_len", [3, 2])
def test_histories_by_reference_give_the_inline_tensors(dmf_set, inline_set, max_len):
    import pyarrow.dataset as pads

    rows = pads.dataset(str(dmf_set / "split=train"), format="parquet").to_table()
    assert "hist_item_ids" not in rows.column_names and "hist_sim" not in rows.column_names
    assert "user_sequence__event_timestamp" in rows.column_names and "hist_len" in rows.column_names
    ref, inline = _all_rows(dmf_set, max_len), _all_rows(inline_set, max_len)
    assert ref.keys() == inline.keys()
    for key in ref:
        assert torch.allclose(ref[key].double(), inline[key].double(), atol=1e-6), key


def test_a_snapshot_key_missing_from_its_table_is_an_error_naming_it(dmf_set, tmp_path):
    import json
    import shutil

    out = tmp_path / "set"
    shutil.copytree(dmf_set, out)
    manifest = json.loads((out / "manifest.json").read_text())
    view = next(v for v in manifest["views"] if v["name"] == "user_sequence")
    table = pq.read_table(Path(view["glob"]).parent)
    pq.write_table(table.filter(pa.compute.not_equal(table.column("user_id"), 1)), tmp_path / "snapshots.parquet")
    view["glob"] = str(tmp_path / "snapshots.parquet")  # the table rewritten without user 1 since the build
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KeyError, match="no row for key 1 at .*rebuild it"):
        list(TrainingSetDataset(out, LoaderConfig(batch_size=4, max_len=3, shuffle=False)))


def test_snapshot_index_keeps_the_newest_items_and_pads():
    from mmfs.model.data import SnapshotIndex

    lists = pa.array([[1, 2, 3], [7], None, [4, 5]], pa.list_(pa.int64()))
    index = SnapshotIndex(np.array([2, 1, 1, 3]), np.array([10, 20, 10, 10]), lists)
    rows = index.rows(np.array([1, 2, 1, 3, 9]), np.array([20, 10, 10, 10, 0]), np.array([True, True, True, True, False]))
    values, mask = index.padded(rows, 2)
    assert values.tolist() == [[7, 0], [2, 3], [0, 0], [4, 5], [0, 0]]
    assert mask.tolist() == [[True, False], [True, True], [False, False], [True, True], [False, False]]
    with pytest.raises(KeyError, match="no row for key 1 at 15"):
        index.rows(np.array([1]), np.array([15]), np.array([True]))
    sparse = SnapshotIndex(np.array([2, 1, 1, 3]) + (1 << 40), np.array([10, 20, 10, 10]), lists)  # keys found by search
    assert index.ranges.dense and not sparse.ranges.dense
    assert sparse.padded(sparse.rows(np.array([1, 2, 1, 3, 9]) + (1 << 40), np.array([20, 10, 10, 10, 0]),
                                     np.array([True, True, True, True, False])), 2)[0].tolist() == values.tolist()

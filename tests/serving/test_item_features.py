"""The columnar item cache, on tiny inline rows (no store)."""
import pytest
from feast.protos.feast.types.Value_pb2 import Value

from mmfs.online.columns import decode_rows
from mmfs.serving.item_features import ItemColumns
from mmfs.online.rows import MISSING_US, RawRows


def rows_for(ids):
    """One scalar per id (the id itself) and a stamp of id seconds."""
    return RawRows([i * 1_000_000 for i in ids], {"x": [Value(int64_val=i).SerializeToString() for i in ids]})


def cached(columns, ids):
    columns.insert(ids, decode_rows(rows_for(ids), {"x": 0}))


def test_columns_evict_first_in_first_out_and_keep_what_was_recached():
    columns = ItemColumns({"x": 0}, capacity=4)
    cached(columns, [1, 2, 3])
    cached(columns, [4])
    assert (columns.lookup([1, 2, 3, 4, 5]) >= 0).tolist() == [True, True, True, True, False]
    columns.discard(1)
    cached(columns, [1])  # full: takes the oldest slot (1's own old slot), evicting nobody else
    assert (columns.lookup([1, 2, 3, 4]) >= 0).all()
    cached(columns, [5, 6])  # evicts the next oldest: 2 and 3
    slots = columns.lookup([1, 2, 3, 4, 5, 6])
    assert (slots >= 0).tolist() == [True, False, False, True, True, True]
    rows = columns.rows.take(slots[[0, 3, 4, 5]])
    assert rows.values["x"].tolist() == [1, 4, 5, 6] and rows.stamps_us.tolist() == [1e6, 4e6, 5e6, 6e6]


def test_columns_grow_past_the_first_allocation_and_clear():
    columns = ItemColumns({"v": 2}, capacity=5000)
    ids = list(range(3000))
    columns.insert(ids, decode_rows(RawRows([MISSING_US] * 3000, {"v": [None] * 3000}), {"v": 2}))
    assert len(columns.rows.stamps_us) >= 3000 and (columns.lookup(ids) >= 0).all()
    columns.clear()
    assert (columns.lookup(ids) == -1).all()


@pytest.mark.parametrize("capacity", [2, 100])
def test_a_request_larger_than_the_cache_is_answered_whole(capacity, tmp_path):
    from mmfs.serving.item_features import ItemFeatureCache, ItemFeatures

    class Reader:
        views = {"item_stats": (type("FV", (), {"join_keys": ["item_id"]})(), ["x"])}

        def read_raw(self, view, ids, features=None):
            return rows_for(ids)

    class Store:
        config = type("C", (), {"registry": type("R", (), {"path": ""})()})()
        repo_path = tmp_path

    items = ItemFeatures(Reader(), ItemFeatureCache(Store(), capacity, 300), {"item_stats": {"x": 0}})
    for _ in range(2):
        rows = items.read("item_stats", [7, 8, 9, 7, 10])
        assert rows.values["x"].tolist() == [7, 8, 9, 7, 10] and rows.found["x"].all()

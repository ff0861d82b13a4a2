import numpy as np

from mmfs.core.features.item_index import MISSING, ItemEmbeddingIndex


def make_index():
    # item 1: v0 at t=10 (known at 10), v1 at t=20 but back-filled (known only at 50), v2 at t=30.
    # item 2: one version at t=100.
    item_ids = np.array([1, 1, 1, 2])
    event_us = np.array([20, 10, 30, 100])
    created_us = np.array([50, 10, 30, 100])
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    return ItemEmbeddingIndex(item_ids, event_us, created_us, vectors)


def test_point_in_time_lookup_skips_future_and_backfilled_versions():
    index = make_index()
    queries = np.array([1, 1, 1, 1, 1, 1, 2, 2, 3])
    as_of = np.array([9, 10, 25, 29, 30, 60, 99, 100, 1000])
    rows = index.lookup(queries, as_of)
    got = [None if r == MISSING else index.vectors[r].tolist() for r in rows]
    assert got == [
        None,  # before the first version
        [0.0, 1.0],  # equal timestamp counts as known (Feast: feature_ts <= entity_ts)
        [0.0, 1.0],  # v1 exists at 20 but was only created at 50: must not leak
        [0.0, 1.0],
        [1.0, 1.0],  # v2 at exactly 30
        [1.0, 1.0],  # newest by event time wins once every version is known
        None,  # one microsecond before item 2 exists
        [2.0, 2.0],
        None,  # unknown item
    ]


def test_vectors_at_returns_zero_rows_and_mask_for_missing():
    vectors, found = make_index().vectors_at(np.array([2, 7]), np.array([100, 100]))
    np.testing.assert_array_equal(found, [True, False])
    np.testing.assert_array_equal(vectors[1], [0.0, 0.0])


def test_small_ids_by_gather_and_large_ids_by_search_agree():
    rng = np.random.default_rng(0)
    ids = rng.choice(np.arange(0, 400, 3), 300)  # gaps: most ids have no versions
    event = rng.integers(0, 1000, 300)
    created = event + rng.integers(0, 50, 300)
    vectors = rng.standard_normal((300, 4))
    small = ItemEmbeddingIndex(ids, event, created, vectors)
    large = ItemEmbeddingIndex(ids + (1 << 40), event, created, vectors)  # too sparse for the dense map
    assert small.ranges.dense and not large.ranges.dense
    queries = np.concatenate([rng.integers(-5, 420, 2000), [-1, 0, 399, 10**9]])
    as_of = rng.integers(0, 1100, len(queries))
    want = large.lookup(queries + (1 << 40), as_of)
    got = small.lookup(queries, as_of)
    np.testing.assert_array_equal(got, want)
    assert (got != MISSING).sum() > 100

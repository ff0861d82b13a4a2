"""Feast's own point-in-time join over our tables, on adversarial histories.

The sequence job stamps each snapshot 1 microsecond after its newest positive so that Feast's
join (feature_ts <= entity_ts) reproduces exactly the history strictly before each event.
"""
import pandas as pd
import pytest  # noqa: F401

from mmfs.store import feast_store
from tests.support.feast_tables import EVENTS


@pytest.fixture(scope="module")
def store(applied_repo):
    repo, root = applied_repo
    return feast_store.open_store("duckdb", repo, root)


def test_feast_join_on_snapshots_reproduces_each_events_history(store, tiny_root):
    _, tables = tiny_root
    entity = pd.DataFrame([(u, i, pd.Timestamp(t, tz="UTC")) for u, i, t, _ in EVENTS], columns=["user_id", "item_id", "event_timestamp"])
    got = store.get_historical_features(
        entity_df=entity, features=["user_sequence:hist_item_ids", "user_sequence:hist_len"]
    ).to_df()
    assert len(got) == len(EVENTS)  # no entity row lost, even those sharing a timestamp
    history = {(r.user_id, r.item_id, r.event_timestamp.tz_convert(None).to_pydatetime()):
               (list(r.hist_item_ids) if r.hist_item_ids is not None else []) for r in got.itertuples()}
    spark_sequences = {(r.user_id, r.item_id, r.event_timestamp): r.hist_item_ids for r in tables["sequences"].collect()}
    assert history == spark_sequences
    by_pair = {(u, i): h for (u, i, _), h in history.items() if u == 1}
    assert by_pair == {(1, 10): [], (1, 11): [], (1, 12): [10, 11], (1, 13): [10, 11, 12], (1, 14): [10, 11, 12]}


def test_feast_join_never_serves_an_embedding_from_after_the_event(store):
    """With ``filter_by_created_timestamp`` (Feast 0.67, PR 6617) Feast's own join honours the
    created-timestamp rule: a back-filled value never reaches rows before it was written."""
    times = ["2019-12-31 23:59:59.999999", "2020-01-01 00:00:00", "2020-01-02 00:00:00",
             "2020-01-02 00:00:00.000001", "2020-03-01 00:00:00", "2020-07-01 00:00:00"]
    entity = pd.DataFrame({"item_id": [10] * len(times), "event_timestamp": [pd.Timestamp(t, tz="UTC") for t in times]})
    got = store.get_historical_features(entity_df=entity, features=["item_embeddings:mm_emb"], filter_by_created_timestamp=True).to_df()
    by_time = {r.event_timestamp: (None if r.mm_emb is None else round(float(r.mm_emb[1]), 6)) for r in got.itertuples()}
    values = [by_time[pd.Timestamp(t, tz="UTC")] for t in times]
    # sin of the version's angle: 0 deg from Jan 1, 90 deg known 1us after Jan 2, the 180 deg
    # back-fill (event Feb 1) only once written in June.
    assert values == [None, 0.0, 0.0, 1.0, 1.0, 0.0]

"""mmfs implicit: positives kept, negatives at the same instant, never an item the user touched,
drawn in proportion to popularity, deterministic."""
import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from mmfs.core.contracts.tables import EVENTS
from mmfs.pipelines.implicit import implicit_events

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def events(rows):
    users, items, seconds, labels = zip(*rows)
    return pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
                     "event_timestamp": pa.array([T0 + dt.timedelta(seconds=s) for s in seconds], pa.timestamp("us", tz="UTC")),
                     "label": pa.array(labels, pa.int32())}, schema=EVENTS.arrow())


def test_negatives_share_the_positives_instant_and_never_touch_the_users_items():
    rng = np.random.default_rng(0)
    rows = [(u, int(i), int(s), int(rng.random() < 0.5)) for u in range(1, 30) for i, s in
            zip(rng.choice(60, 12, replace=False), rng.integers(0, 3, 12))]  # colliding instants per user
    table = events(rows)
    out = implicit_events(table, negatives=2, positives="all", seed=1)
    assert out.schema == EVENTS.arrow()
    got = out.to_pandas()
    pos, neg = got[got.label == 1], got[got.label == 0]
    assert len(pos) == len(rows) and len(neg) == 2 * len(rows)
    touched = {(u, i) for u, i, _, _ in rows}
    assert not any((u, i) in touched for u, i in zip(neg.user_id, neg.item_id))
    # each negative at an instant where its user has a positive, and as many as 2 per positive there
    per_instant = pos.groupby(["user_id", "event_timestamp"]).size() * 2
    assert neg.groupby(["user_id", "event_timestamp"]).size().sort_index().equals(per_instant.sort_index())
    assert not got.duplicated(["user_id", "item_id", "event_timestamp"]).any()
    assert implicit_events(table, 2, "all", seed=1).equals(out)


def test_clicks_mode_keeps_only_labelled_positives():
    table = events([(1, 1, 0, 1), (1, 2, 1, 0), (2, 3, 0, 1), (2, 4, 0, 0), (3, 5, 0, 1), (3, 6, 0, 1)])
    got = implicit_events(table, positives="clicks", seed=0).to_pandas()
    assert sorted(got[got.label == 1].item_id) == [1, 3, 5, 6]
    assert {(1, 2), (2, 4)}.isdisjoint(zip(got[got.label == 0].user_id, got[got.label == 0].item_id))


def test_negatives_follow_popularity():
    # item 1 is positive for 400 users, item 2 for 100; user u's negative is one of the items u lacks
    rows = [(u, 1 if u < 400 else 2, 0, 1) for u in range(500)] + [(1000 + k, 3 + k, 0, 1) for k in range(10)]
    got = implicit_events(events(rows), seed=3).to_pandas()
    neg = got[(got.label == 0) & (got.user_id >= 1000)]
    assert (neg.item_id == 1).mean() > 0.6  # 400 : 100 : 1 each for the others


def test_negatives_follow_the_popularity_at_their_instant_never_a_later_one():
    """Item 1 is liked by 1,500 users at t = 0-1499 s (beside 1,500 films liked once each), item 2 by
    1,500 others only from t = 5000 s: no negative before 5000 s is item 2 (drawn by whole-log
    popularity, a third of them were); a late one, with window 1,000, is item 2, the item liked then."""
    rows = [(u, 1, u, 1) for u in range(1500)] + [(20_000 + u, 100 + u, u, 1) for u in range(1500)]
    rows += [(10_000 + u, 2, 5000 + u, 1) for u in range(1500)] + [(50_001, 4, 7000, 1)]
    got = implicit_events(events(rows), seed=0, window=1000).to_pandas()
    neg = got[got.label == 0]
    early = neg[neg.event_timestamp < T0 + dt.timedelta(seconds=5000)]
    assert len(early) == 3000 and not (early.item_id == 2).any() and (early.item_id == 1).mean() > 0.2  # half of the 1,500 filler users
    assert neg.set_index("user_id").item_id[50_001] == 2


def test_a_user_with_nothing_left_to_draw_is_named():
    with pytest.raises(ValueError, match="user 7"):
        implicit_events(events([(7, 1, 0, 1), (7, 2, 0, 1)]), seed=0)

"""Point-in-time behaviour of the sequence job on small adversarial histories."""
from pyspark.sql import Row

from pipelines.schemas import EVENTS_SCHEMA
from pipelines.user_sequences import output_rules, transform
from pipelines.validation import assert_valid_output
from tests.conftest import ts


def events_df(spark, rows):
    return spark.createDataFrame([Row(user_id=u, item_id=i, event_timestamp=ts(t), label=l) for u, i, t, l in rows], EVENTS_SCHEMA)


EVENTS = [
    # user 1: two positives at the same second, a negative, a positive 1us later, then more.
    (1, 10, "2020-01-01 00:00:00", 1),
    (1, 11, "2020-01-01 00:00:00", 1),
    (1, 12, "2020-01-01 00:00:00", 0),
    (1, 13, "2020-01-01 00:00:00.000001", 1),
    (1, 14, "2020-01-02 00:00:00", 0),
    (1, 15, "2020-01-03 00:00:00", 1),
    # user 2: only negatives.
    (2, 10, "2020-01-01 00:00:00", 0),
]


def by_event(df):
    return {(r.user_id, r.item_id, r.event_timestamp): r for r in df.collect()}


def test_sequences_hold_only_positives_strictly_before_the_event(spark):
    seqs = by_event(transform(events_df(spark, EVENTS), max_len=50)["sequences"])
    t0, t1 = ts("2020-01-01 00:00:00"), ts("2020-01-01 00:00:00.000001")
    # Events at the same instant never see each other, positive or not.
    assert seqs[(1, 10, t0)].hist_item_ids == []
    assert seqs[(1, 11, t0)].hist_item_ids == []
    assert seqs[(1, 12, t0)].hist_item_ids == []
    # One microsecond later both earlier positives are visible, the negative is not.
    assert seqs[(1, 13, t1)].hist_item_ids == [10, 11]
    assert seqs[(1, 14, ts("2020-01-02 00:00:00"))].hist_item_ids == [10, 11, 13]
    row = seqs[(1, 15, ts("2020-01-03 00:00:00"))]
    assert row.hist_item_ids == [10, 11, 13]
    assert row.hist_timestamps == [t0, t0, t1]
    assert row.hist_len == 3
    assert seqs[(2, 10, t0)].hist_item_ids == []


def test_history_is_truncated_to_the_newest_n(spark):
    rows = [(7, 100 + k, f"2021-01-01 00:00:{k:02d}", 1) for k in range(6)]
    seqs = by_event(transform(events_df(spark, rows), max_len=3)["sequences"])
    assert seqs[(7, 105, ts("2021-01-01 00:00:05"))].hist_item_ids == [102, 103, 104]
    assert seqs[(7, 102, ts("2021-01-01 00:00:02"))].hist_item_ids == [100, 101]


def test_snapshots_are_stamped_after_their_newest_positive(spark):
    snaps = transform(events_df(spark, EVENTS), max_len=50)["user_sequence_snapshots"].collect()
    got = sorted((r.user_id, r.event_timestamp, tuple(r.hist_item_ids)) for r in snaps)
    assert got == [
        (1, ts("2020-01-01 00:00:00.000001"), (10, 11)),
        (1, ts("2020-01-01 00:00:00.000002"), (10, 11, 13)),
        (1, ts("2020-01-03 00:00:00.000001"), (10, 11, 13, 15)),
    ]


def test_feast_style_asof_join_on_snapshots_equals_the_sequence_table(spark):
    """A join picking the newest snapshot with stamp <= T reproduces every event's history."""
    tables = transform(events_df(spark, EVENTS), max_len=50)
    snaps = [(r.user_id, r.event_timestamp, r.hist_item_ids) for r in tables["user_sequence_snapshots"].collect()]
    for r in tables["sequences"].collect():
        visible = [s for s in snaps if s[0] == r.user_id and s[1] <= r.event_timestamp]
        expected = max(visible, key=lambda s: s[1])[2] if visible else []
        assert r.hist_item_ids == expected, (r.user_id, r.item_id, r.event_timestamp)


def test_current_snapshot_is_the_newest_per_user(spark):
    current = transform(events_df(spark, EVENTS), max_len=50)["user_sequence_current"].collect()
    assert [(r.user_id, r.hist_item_ids) for r in current] == [(1, [10, 11, 13, 15])]


def test_outputs_pass_their_contract(spark):
    tables = transform(events_df(spark, EVENTS), max_len=50)
    rules = output_rules(50)
    for name, df in tables.items():
        assert assert_valid_output(df, rules[name]).success

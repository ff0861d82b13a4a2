"""Point-in-time behaviour of the sequence job on small adversarial histories."""
from pyspark.sql import Row

from mmfs.pipelines.spark.schemas import EVENTS_SCHEMA
from mmfs.pipelines.jobs.user_sequences import output_rules, transform
from mmfs.pipelines.spark.validation import assert_valid_output
from tests.support.times import ts


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


def test_contract_refuses_a_history_item_at_the_events_own_time(spark):
    """The output rule is strict: a history item stamped at the row's own time is a leak."""
    import pytest
    from pyspark.sql import functions as F

    from mmfs.pipelines.spark.validation import ValidationError

    sequences = transform(events_df(spark, EVENTS), max_len=50)["sequences"]
    leaked = sequences.withColumn(  # the row at 2020-01-03 claims the positive at its own instant
        "hist_timestamps", F.when(F.col("item_id") == 15, F.array_union("hist_timestamps", F.array("event_timestamp")))
        .otherwise(F.col("hist_timestamps"))).withColumn(
        "hist_item_ids", F.when(F.col("item_id") == 15, F.array_union("hist_item_ids", F.array(F.lit(15).cast("long"))))
        .otherwise(F.col("hist_item_ids"))).withColumn("hist_len", F.size("hist_item_ids").cast("int"))
    with pytest.raises(ValidationError, match="history_strictly_before_event"):
        assert_valid_output(leaked, output_rules(50)["sequences"])


def test_outputs_pass_their_contract(spark):
    tables = transform(events_df(spark, EVENTS), max_len=50)
    rules = output_rules(50)
    for name, df in tables.items():
        assert assert_valid_output(df, rules[name]).success


def test_incremental_run_recomputes_affected_users_and_equals_a_full_recompute(spark, tmp_path, capsys):
    from mmfs.pipelines.jobs import user_sequences
    from mmfs.pipelines.spark.schemas import EVENTS_SCHEMA
    from mmfs.pipelines.spark.table_io import write_table

    def events(rows):
        return spark.createDataFrame([(u, i, ts(t), label) for u, i, t, label in rows], EVENTS_SCHEMA)

    base = [(1, 10, "2020-01-01 00:00:00", 1), (1, 11, "2020-01-02 00:00:00", 1), (2, 10, "2020-01-01 00:00:00", 1),
            (2, 12, "2020-01-03 00:00:00", 0), (3, 13, "2020-01-01 00:00:00", 1), (5, 14, "2020-01-01 00:00:00", 1),
            (5, 15, "2020-01-05 00:00:00", 1)]
    root = tmp_path / "root"
    write_table(events(base), str(root / "events"))
    assert user_sequences.main(["--root", str(root), "--max-len", "3"]) == 0

    later = [row for row in base if row[0] != 3] + [  # user 3's events are withdrawn
        (1, 16, "2020-01-04 00:00:00", 1),  # a new event for user 1
        (2, 17, "2020-01-02 00:00:00", 1),  # a late event for user 2, between its old ones
        (4, 10, "2020-01-06 00:00:00", 1),  # a new user
    ]
    write_table(events(later), str(root / "events"))
    capsys.readouterr()
    assert user_sequences.main(["--root", str(root), "--max-len", "3", "--incremental"]) == 0
    assert "4 users recomputed" in capsys.readouterr().out  # 1, 2, 3 and 4; user 5 is kept as it was
    full = transform(events(later), max_len=3)
    for name, expected in full.items():
        got = spark.read.parquet(str(root / name))
        key = ["user_id", "event_timestamp"] + (["item_id"] if name == "sequences" else [])
        assert sorted(map(tuple, got.select(*expected.columns).collect())) == sorted(map(tuple, expected.collect())), name
        assert got.count() == got.dropDuplicates(key).count()
    state = {r.user_id: r.n_events for r in spark.read.parquet(str(root / "user_sequences_state")).collect()}
    assert state == {1: 3, 2: 3, 4: 1, 5: 2}

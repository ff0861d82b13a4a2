"""The snapshot rule and the running-stats rule, written once, agree with the Spark jobs that use them."""
import datetime as dt

import numpy as np

from mmfs.core.features.snapshot import STAMP_AFTER_US, next_history, stamp_after
from mmfs.core.features.stats import running_stats_rows, smoothed_ctr
from tests.support.times import ts


def test_a_row_holding_events_up_to_t_is_stamped_after_t():
    t = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    assert stamp_after(t) > t and stamp_after(t) - t == dt.timedelta(microseconds=STAMP_AFTER_US) == dt.timedelta(microseconds=1)


def test_next_history_orders_by_time_then_item_and_keeps_the_newest():
    history = [(10, 7), (20, 3)]
    assert next_history(history, [(20, 1), (30, 9)], max_len=3) == [(20, 1), (20, 3), (30, 9)]
    assert next_history([], [(5, 2)], max_len=1) == [(5, 2)]


def test_running_stats_rows_equal_the_spark_jobs_rows(spark):
    """The feedback path's Python rule and item_stats' Spark rule on the same events, colliding
    timestamps included: the same rows, stamps and smoothed CTRs."""
    from pyspark.sql import Row

    from mmfs.pipelines.jobs.item_stats import running_stats
    from mmfs.pipelines.spark.schemas import EVENTS_SCHEMA

    events = [(1, 10, "2020-01-01 00:00:00", 1), (2, 10, "2020-01-01 00:00:00", 0), (3, 10, "2020-01-02 00:00:00", 1),
              (1, 11, "2020-01-01 00:00:00", 0), (1, 11, "2020-01-01 00:00:00.000001", 1)]
    df = spark.createDataFrame([Row(user_id=u, item_id=i, event_timestamp=ts(t), label=l) for u, i, t, l in events], EVENTS_SCHEMA)
    spark_rows = sorted((r.item_id, r.event_timestamp, r.impressions, r.clicks, round(r.ctr, 6))
                        for r in running_stats(df, "item_id").collect())
    python_rows = sorted((k, t, n, c, round(float(np.float32(ctr)), 6))
                         for k, t, n, c, ctr in running_stats_rows([(i, ts(t), l) for _, i, t, l in events], {}))
    assert python_rows == spark_rows
    assert python_rows[1] == (10, ts("2020-01-02 00:00:00.000001"), 3, 2, round(float(np.float32(smoothed_ctr(2, 3))), 6))

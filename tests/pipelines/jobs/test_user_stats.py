"""user_stats: item_stats' rule keyed by user; events at one instant never see each other."""
import pytest
from pyspark.sql import Row

from mmfs.pipelines.spark.schemas import EVENTS_SCHEMA
from mmfs.pipelines.jobs.user_stats import output_rules, transform
from mmfs.pipelines.spark.validation import assert_valid_output
from tests.support.times import ts

EVENTS = [
    (1, 10, "2020-01-01 00:00:00", 1),
    (1, 11, "2020-01-01 00:00:00", 0),  # same user, same instant
    (1, 12, "2020-01-01 00:00:00.000001", 1),
    (2, 10, "2020-01-05 00:00:00", 0),
]


def test_cumulative_user_counts_stamped_one_microsecond_after(spark):
    events = spark.createDataFrame([Row(user_id=u, item_id=i, event_timestamp=ts(t), label=l) for u, i, t, l in EVENTS], EVENTS_SCHEMA)
    stats = transform(events, prior_ctr=0.5, prior_weight=2.0)
    assert_valid_output(stats, output_rules())
    assert stats.columns == ["user_id", "event_timestamp", "user_impressions", "user_clicks", "user_ctr"]
    rows = {(r.user_id, r.event_timestamp): (r.user_impressions, r.user_clicks, r.user_ctr) for r in stats.collect()}
    assert rows.keys() == {(1, ts("2020-01-01 00:00:00.000001")), (1, ts("2020-01-01 00:00:00.000002")),
                           (2, ts("2020-01-05 00:00:00.000001"))}
    assert rows[(1, ts("2020-01-01 00:00:00.000001"))][:2] == (2, 1)  # both same-instant events in one row
    assert rows[(1, ts("2020-01-01 00:00:00.000002"))] == (3, 2, pytest.approx((2 + 1) / (3 + 2)))
    assert rows[(2, ts("2020-01-05 00:00:00.000001"))] == (1, 0, pytest.approx(1 / 3))

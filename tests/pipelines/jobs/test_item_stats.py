"""item_stats counts only events strictly before the row time once joined by Feast's rule."""
import pytest
from pyspark.sql import Row

from mmfs.pipelines.jobs.item_stats import output_rules, transform
from mmfs.pipelines.spark.schemas import EVENTS_SCHEMA
from mmfs.pipelines.spark.validation import assert_valid_output
from tests.support.times import ts

EVENTS = [
    (1, 10, "2020-01-01 00:00:00", 1),
    (2, 10, "2020-01-01 00:00:00", 0),  # same instant as the click above
    (3, 10, "2020-01-01 00:00:00.000001", 1),
    (1, 11, "2020-01-05 00:00:00", 0),
]


def test_cumulative_counts_stamped_one_microsecond_after(spark):
    events = spark.createDataFrame([Row(user_id=u, item_id=i, event_timestamp=ts(t), label=l) for u, i, t, l in EVENTS], EVENTS_SCHEMA)
    stats = transform(events, prior_ctr=0.5, prior_weight=2.0)
    assert_valid_output(stats, output_rules())
    rows = {(r.item_id, r.event_timestamp): (r.impressions, r.clicks, r.ctr) for r in stats.collect()}
    assert rows.keys() == {(10, ts("2020-01-01 00:00:00.000001")), (10, ts("2020-01-01 00:00:00.000002")),
                           (11, ts("2020-01-05 00:00:00.000001"))}
    # The two events at the same instant land in one row: neither sees the other at T.
    assert rows[(10, ts("2020-01-01 00:00:00.000001"))][:2] == (2, 1)
    assert rows[(10, ts("2020-01-01 00:00:00.000002"))][:2] == (3, 2)
    assert rows[(10, ts("2020-01-01 00:00:00.000002"))][2] == pytest.approx((2 + 1) / (3 + 2))
    assert rows[(11, ts("2020-01-05 00:00:00.000001"))] == (1, 0, pytest.approx(1 / 3))

"""user_stats: each user's event count and click rate as of time, point-in-time correct.

    spark-submit pipelines/jobs/user_stats.py --root out/ml

Reads ``<root>/events``; writes ``<root>/user_stats``: one row per (user, distinct event time t)
with the user's cumulative ``user_impressions`` and ``user_clicks`` up to and including t and the
smoothed ``user_ctr``, stamped t + 1 microsecond. It is ``item_stats``' rule
(``item_stats.running_stats``) keyed by user: Feast's join at T counts only events strictly before
T, and a user first seen after training still brings their own click rate, which no id embedding
can (docs/models.md).
"""
from __future__ import annotations

import sys

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mmfs.core.features.stats import PRIOR_CTR, PRIOR_WEIGHT
from mmfs.pipelines.jobs.item_stats import run_stats_job, running_stats
from mmfs.pipelines.spark.schemas import USER_STATS_SCHEMA, columns
from mmfs.pipelines.spark.table_io import job_main
from mmfs.pipelines.spark.validation import Rule, TableRules


def output_rules() -> TableRules:
    """Output rules of ``user_stats``: consistent counts, smoothed user_ctr in (0, 1), one row per (user_id, event_timestamp)."""
    return TableRules(
        table="user_stats",
        rules=(
            Rule("counts_consistent", "user_impressions >= 1 AND user_clicks >= 0 AND user_clicks <= user_impressions",
                 "user_clicks must lie in [0, user_impressions] and user_impressions >= 1"),
            Rule("ctr_in_range", "user_ctr > 0 AND user_ctr < 1 AND NOT isnan(user_ctr)", "smoothed user_ctr must lie in (0, 1)"),
        ),
        unique_key=("user_id", "event_timestamp"),
    )


def transform(events: DataFrame, prior_ctr: float = PRIOR_CTR, prior_weight: float = PRIOR_WEIGHT) -> DataFrame:
    """Events -> ``user_stats`` rows (``running_stats`` keyed by user_id, columns renamed ``user_*``)."""
    stats = running_stats(events, "user_id", prior_ctr, prior_weight)
    return stats.select(
        "user_id", "event_timestamp",
        F.col("impressions").alias("user_impressions"), F.col("clicks").alias("user_clicks"), F.col("ctr").alias("user_ctr"),
    ).select(*columns(USER_STATS_SCHEMA))


@job_main
def main(argv: list[str] | None = None) -> int:
    """``mmfs user-stats``: compute, validate and write ``<root>/user_stats``. Returns 0."""
    return run_stats_job(argv, "user_stats", transform, output_rules(), __doc__)


if __name__ == "__main__":
    sys.exit(main())

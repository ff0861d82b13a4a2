"""item_stats: each item's popularity and CTR as of time, point-in-time correct.

    spark-submit pipelines/jobs/item_stats.py --root out/ml

Reads ``<root>/events``; writes ``<root>/item_stats``: one row per (item, distinct event time t)
with the cumulative impressions and clicks of all events up to and including t, stamped
t + 1 microsecond. Feast's join (feature_ts <= entity_ts) at time T therefore only counts events
strictly before T: a row's own click never leaks into its features, nor do clicks at the same
instant. ``ctr`` is smoothed towards ``prior_ctr`` with ``prior_weight`` pseudo-impressions so a
new item is not scored 0 or 1 on one event.
"""
from __future__ import annotations

import argparse
import sys

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from mmfs.pipelines.spark import reports
from mmfs.core.features.snapshot import STAMP_AFTER_SQL
from mmfs.core.features.stats import PRIOR_CTR, PRIOR_WEIGHT, smoothed_ctr
from mmfs.pipelines.spark.args import add_common_args, spark_from_args
from mmfs.pipelines.spark.schemas import ITEM_STATS_SCHEMA, columns
from mmfs.pipelines.spark.table_io import job_main, read_table, write_table
from mmfs.pipelines.spark.validation import Rule, TableRules, assert_valid_output



def output_rules() -> TableRules:
    """Output rules of ``item_stats``: consistent counts, smoothed ctr in (0, 1), one row per (item_id, event_timestamp)."""
    return TableRules(
        table="item_stats",
        rules=(
            Rule("counts_consistent", "impressions >= 1 AND clicks >= 0 AND clicks <= impressions",
                 "clicks must lie in [0, impressions] and impressions >= 1"),
            Rule("ctr_in_range", "ctr > 0 AND ctr < 1 AND NOT isnan(ctr)", "smoothed ctr must lie in (0, 1)"),
        ),
        unique_key=("item_id", "event_timestamp"),
    )


def running_stats(events: DataFrame, key: str, prior_ctr: float = PRIOR_CTR, prior_weight: float = PRIOR_WEIGHT) -> DataFrame:
    """The stats rule, for any entity ``key`` (item_id here, user_id in ``user_stats``): one row per
    (key, distinct event time t) with ``impressions``, ``clicks`` up to and including t and the
    smoothed ``ctr``, stamped t + 1 microsecond."""
    per_instant = events.groupBy(key, "event_timestamp").agg(
        F.count(F.lit(1)).alias("_n"), F.sum("label").cast("long").alias("_clicks")
    )
    upto = Window.partitionBy(key).orderBy("event_timestamp").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    return (
        per_instant.withColumn("impressions", F.sum("_n").over(upto))
        .withColumn("clicks", F.sum("_clicks").over(upto))
        .withColumn("ctr", smoothed_ctr(F.col("clicks"), F.col("impressions"), prior_ctr, prior_weight).cast("float"))
        .withColumn("event_timestamp", F.col("event_timestamp") + F.expr(STAMP_AFTER_SQL))
        .select(key, "event_timestamp", "impressions", "clicks", "ctr")
    )


def transform(events: DataFrame, prior_ctr: float = PRIOR_CTR, prior_weight: float = PRIOR_WEIGHT) -> DataFrame:
    """Events -> ``item_stats`` rows (``running_stats`` keyed by item_id)."""
    return running_stats(events, "item_id", prior_ctr, prior_weight).select(*columns(ITEM_STATS_SCHEMA))


def run_stats_job(argv: list[str] | None, table: str, transform_fn, rules: TableRules, doc: str) -> int:
    """The running-stats jobs' one ``main`` (item_stats, user_stats): read ``<root>/events``,
    ``transform_fn(events, prior_ctr, prior_weight)``, validate with ``rules``, write ``<root>/<table>``."""
    name = table.replace("_", "-")
    parser = argparse.ArgumentParser(prog=f"mmfs {name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="table root written by ingest")
    parser.add_argument("--prior-ctr", type=float, default=PRIOR_CTR)
    parser.add_argument("--prior-weight", type=float, default=PRIOR_WEIGHT)
    add_common_args(parser)
    args = parser.parse_args(argv)
    spark = spark_from_args(args, f"mmfs-{name}")
    stats = transform_fn(read_table(spark, f"{args.root}/events"), args.prior_ctr, args.prior_weight).persist()
    report = assert_valid_output(stats, rules)
    write_table(stats, f"{args.root}/{table}", meta={
        "job": table, "prior_ctr": args.prior_ctr, "prior_weight": args.prior_weight, "validation": report.to_dict()})
    reports.print_reports([report], {table: f"{args.root}/{table}"})
    return 0


@job_main
def main(argv: list[str] | None = None) -> int:
    """``mmfs item-stats``: compute, validate and write ``<root>/item_stats``. Returns 0."""
    return run_stats_job(argv, "item_stats", transform, output_rules(), __doc__)


if __name__ == "__main__":
    sys.exit(main())

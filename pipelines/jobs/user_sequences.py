"""user_sequences: each event's behaviour sequence, plus point-in-time snapshots for Feast.

    spark-submit pipelines/jobs/user_sequences.py --root out/ml [--max-len 50]

Reads ``<root>/events``; writes
- ``<root>/sequences``: one row per event with the user's last N positive items strictly before
  the event (oldest first) - the training-row skeleton;
- ``<root>/user_sequence_snapshots``: keyed by (user_id, event_timestamp). A snapshot holding
  positives up to time t is stamped t + 1 microsecond, so Feast's join (feature_ts <= entity_ts)
  at time T only ever sees positives strictly before T, ties included;
- ``<root>/user_sequence_current``: the newest snapshot per user, for the online store.
"""
from __future__ import annotations

import argparse
import sys

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from mmfs.core.features.snapshot import STAMP_AFTER_SQL
from mmfs.pipelines.spark import reports
from mmfs.pipelines.spark.args import add_common_args, spark_from_args
from mmfs.pipelines.spark.schemas import SEQUENCES_SCHEMA, SNAPSHOT_SCHEMA, columns
from mmfs.pipelines.spark.table_io import job_main, read_meta, read_table, table_exists, write_table
from mmfs.pipelines.spark.validation import Rule, TableRules, assert_valid_output

DEFAULT_MAX_LEN = 50


def _history_rules(table: str, max_len: int, key: tuple[str, ...], min_len: int) -> TableRules:
    return TableRules(
        table=table,
        rules=(
            Rule(
                "history_strictly_before_event",
                "forall(hist_timestamps, t -> t < event_timestamp)",
                "a history item is not strictly before the row's timestamp",
            ),
            Rule(
                "history_length",
                f"hist_len = size(hist_item_ids) AND hist_len = size(hist_timestamps) AND hist_len BETWEEN {min_len} AND {max_len}",
                f"hist_len must match the arrays and lie in [{min_len}, {max_len}]",
            ),
            Rule(
                "history_in_time_order",
                "hist_len < 2 OR array_sort(hist_timestamps) = hist_timestamps",
                "history must be oldest first",
            ),
        ),
        unique_key=key,
    )


def output_rules(max_len: int) -> dict[str, TableRules]:
    """Output rules of the three tables, by table name: histories strictly before the row, oldest first, of length <= ``max_len``."""
    return {
        "sequences": _history_rules("sequences", max_len, ("user_id", "item_id", "event_timestamp"), 0),
        "user_sequence_snapshots": _history_rules("user_sequence_snapshots", max_len, ("user_id", "event_timestamp"), 1),
        "user_sequence_current": _history_rules("user_sequence_current", max_len, ("user_id",), 1),
    }


def _split_history(df: DataFrame) -> DataFrame:
    """(event_timestamp, item_id) structs -> parallel id and timestamp arrays."""
    return df.withColumn("hist_item_ids", F.transform("_hist", lambda s: s["item_id"])).withColumn(
        "hist_timestamps", F.transform("_hist", lambda s: s["event_timestamp"])
    ).withColumn("hist_ts_us", F.transform("_hist", lambda s: F.unix_micros(s["event_timestamp"]))
    ).withColumn("hist_len", F.size("_hist").cast("int"))


def build_snapshots(events: DataFrame, max_len: int) -> DataFrame:
    """One snapshot per (user, distinct positive timestamp t), stamped t + 1us."""
    positives = events.filter(F.col("label") == 1).select("user_id", "item_id", "event_timestamp")
    last_n = Window.partitionBy("user_id").orderBy("event_timestamp", "item_id").rowsBetween(-(max_len - 1), 0)
    newest_at_time = Window.partitionBy("user_id", "event_timestamp").orderBy(F.col("item_id").desc())
    snapshots = (
        positives.withColumn("_hist", F.array_sort(F.collect_list(F.struct("event_timestamp", "item_id")).over(last_n)))
        .withColumn("_rank", F.row_number().over(newest_at_time))
        .filter(F.col("_rank") == 1)
        .withColumn("event_timestamp", F.col("event_timestamp") + F.expr(STAMP_AFTER_SQL))
    )
    return _split_history(snapshots).select(*columns(SNAPSHOT_SCHEMA))


def build_sequences(events: DataFrame, snapshots: DataFrame) -> DataFrame:
    """As-of join in one pass: each event takes the newest snapshot stamped <= its timestamp."""
    snapshot_rows = snapshots.select(
        "user_id",
        F.lit(None).cast("long").alias("item_id"),
        "event_timestamp",
        F.lit(None).cast("int").alias("label"),
        F.lit(0).alias("_kind"),  # at equal stamps the snapshot sorts first: it holds only < T
        F.arrays_zip(F.col("hist_timestamps").alias("event_timestamp"), F.col("hist_item_ids").alias("item_id")).alias("_hist"),
    )
    event_rows = events.select(
        "user_id", "item_id", "event_timestamp", "label", F.lit(1).alias("_kind"), F.lit(None).alias("_hist")
    )
    running = Window.partitionBy("user_id").orderBy("event_timestamp", "_kind").rowsBetween(
        Window.unboundedPreceding, Window.currentRow
    )
    joined = (
        snapshot_rows.unionByName(event_rows, allowMissingColumns=False)
        .withColumn("_hist", F.last("_hist", ignorenulls=True).over(running))
        .filter(F.col("_kind") == 1)
        .withColumn("_hist", F.coalesce(F.col("_hist"), F.array().cast(snapshot_rows.schema["_hist"].dataType)))
    )
    return _split_history(joined).select(*columns(SEQUENCES_SCHEMA))


def build_current(snapshots: DataFrame) -> DataFrame:
    """The newest snapshot per user (``user_sequence_current``)."""
    newest = Window.partitionBy("user_id").orderBy(F.col("event_timestamp").desc())
    return snapshots.withColumn("_rank", F.row_number().over(newest)).filter(F.col("_rank") == 1).select(
        *columns(SNAPSHOT_SCHEMA)
    )


def transform(events: DataFrame, max_len: int = DEFAULT_MAX_LEN) -> dict[str, DataFrame]:
    """Events -> ``sequences``, ``user_sequence_snapshots`` and ``user_sequence_current``, by table name."""
    events = events.select("user_id", "item_id", "event_timestamp", "label")
    snapshots = build_snapshots(events, max_len)
    return {
        "sequences": build_sequences(events, snapshots),
        "user_sequence_snapshots": snapshots,
        "user_sequence_current": build_current(snapshots),
    }


def fingerprints(events: DataFrame) -> DataFrame:
    """Per user: how many events and an order-free checksum of them. A user whose pair changed
    since the last run (new, late, corrected or removed events) is recomputed by an incremental run."""
    row_hash = F.xxhash64("item_id", "event_timestamp", "label").cast("decimal(38,0)")  # a sum that cannot overflow
    return events.groupBy("user_id").agg(F.count(F.lit(1)).alias("n_events"), F.sum(row_hash).alias("fingerprint"))


def transform_incremental(events: DataFrame, previous: dict[str, DataFrame], previous_state: DataFrame,
                          max_len: int = DEFAULT_MAX_LEN) -> tuple[dict[str, DataFrame], DataFrame, DataFrame]:
    """Recompute only the users whose events changed; keep every other user's rows as they were.

    Each user's rows depend on that user's events alone, so the result equals ``transform`` on all
    events. Returns (tables, the new state, the affected user ids)."""
    events = events.select("user_id", "item_id", "event_timestamp", "label")
    state = fingerprints(events)
    changed = state.join(previous_state, on=["user_id", "n_events", "fingerprint"], how="left_anti").select("user_id")
    gone = previous_state.select("user_id").join(state.select("user_id"), on="user_id", how="left_anti")
    affected = changed.unionByName(gone)
    fresh = transform(events.join(changed, on="user_id", how="left_semi"), max_len)
    tables = {
        name: previous[name].join(affected, on="user_id", how="left_anti").select(*df.columns).unionByName(df)
        for name, df in fresh.items()
    }
    return tables, state, affected


STATE_TABLE = "user_sequences_state"


@job_main
def main(argv: list[str] | None = None) -> int:
    """``mmfs user-sequences``: compute (in full or incrementally), validate and write the three tables
    and the per-user state. Returns 0."""
    parser = argparse.ArgumentParser(prog="mmfs user-sequences", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="table root written by ingest")
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN, help="history length N (default %(default)s)")
    parser.add_argument("--incremental", action="store_true",
                        help="recompute only users whose events changed since the last run; keep the other users' rows")
    add_common_args(parser)
    args = parser.parse_args(argv)
    spark = spark_from_args(args, "mmfs-user-sequences")
    events = read_table(spark, f"{args.root}/events")
    state_path = f"{args.root}/{STATE_TABLE}"
    if args.incremental:
        if not table_exists(spark, state_path):
            raise SystemExit(f"--incremental needs {state_path} from an earlier run: run user-sequences without it first")
        previous_len = read_meta(spark, state_path).get("max_len")
        if previous_len != args.max_len:
            raise SystemExit(f"the tables hold histories of length {previous_len}, not {args.max_len}: run in full to change it")
        previous = {name: read_table(spark, f"{args.root}/{name}") for name in output_rules(args.max_len)}
        tables, state, affected = transform_incremental(events, previous, read_table(spark, state_path), args.max_len)
        affected = affected.persist()
        print(f"user_sequences --incremental: {affected.count()} users recomputed")
    else:
        tables, state = transform(events, args.max_len), fingerprints(events)
    state = state.persist()
    state.count()  # before any table is replaced: the state is computed from the events alone
    rules = output_rules(args.max_len)
    # Validate all three before writing any, so a broken contract leaves every old table in place.
    validated = {}
    for name, df in tables.items():
        df = df.persist()
        validated[name] = (df, assert_valid_output(df, rules[name]))
    for name, (df, report) in validated.items():
        write_table(df, f"{args.root}/{name}", meta={"job": "user_sequences", "max_len": args.max_len, "validation": report.to_dict()})
    # Last: a run stopped before this point leaves the old state, and the next incremental run
    # recomputes the same users again.
    write_table(state, state_path, meta={"job": "user_sequences", "max_len": args.max_len, "incremental": args.incremental})
    written_reports = [report for _, report in validated.values()]
    reports.print_reports(written_reports, {name: f"{args.root}/{name}" for name in tables})
    return 0


if __name__ == "__main__":
    sys.exit(main())

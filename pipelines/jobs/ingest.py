"""ingest: raw items and events (MovieLens or your own CSV/parquet) -> canonical parquet tables.

    spark-submit pipelines/jobs/ingest.py --source movielens --input data/movielens-small --out out/ml
    spark-submit pipelines/jobs/ingest.py --source files --items items.csv --events events.parquet --out out/x

Rows that break a rule go to ``<out>/quarantine/{items,events}`` with the rule and the reason.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mmfs.pipelines.spark import reports
from mmfs.core.events.rules import EARLIEST, EVENT_KEY, latest_allowed, reason, sql_time
from mmfs.pipelines.spark.args import add_common_args, spark_from_args
from mmfs.pipelines.spark.schemas import EVENTS_SCHEMA, ITEMS_SCHEMA, columns
from mmfs.pipelines.spark.sources import read_files, read_movielens
from mmfs.pipelines.spark.table_io import job_main, write_table
from mmfs.pipelines.spark.validation import (
    Rule,
    TableRules,
    ValidationReport,
    assert_valid_output,
    integral_sql,
    validate_and_split,
)

log = logging.getLogger(__name__)


def _latest_allowed(now: dt.datetime) -> str:
    return sql_time(latest_allowed(now))


def timestamp_sql(column: str) -> str:
    """A timestamp column or an ISO-8601 string as TIMESTAMP (naive values are UTC), else null."""
    return f"coalesce(try_cast({column} AS TIMESTAMP), try_to_timestamp(cast({column} AS STRING)))"


def item_rules(now: dt.datetime) -> TableRules:
    """The raw items' rules at run time ``now``: ids, timestamps in range, one row per (item, version)."""
    latest = _latest_allowed(now)
    return TableRules(
        table="items",
        rules=(
            Rule("item_id_integral", "_item_id IS NOT NULL", "item_id is missing or not an integer"),
            Rule("updated_at_parseable", "_updated_at IS NOT NULL", "updated_at is missing or not a timestamp"),
            Rule(
                "updated_at_in_range",
                f"_updated_at IS NULL OR _updated_at BETWEEN TIMESTAMP'{sql_time(EARLIEST)}' AND TIMESTAMP'{latest}'",
                f"updated_at is outside [{sql_time(EARLIEST)}, {latest}]",
            ),
            Rule(
                "created_not_before_updated",
                "_created_timestamp IS NULL OR _updated_at IS NULL OR _created_timestamp >= _updated_at",
                "created_at (when the version became known) precedes updated_at",
            ),
            Rule(
                "has_content",
                "_has_text OR length(trim(coalesce(title, ''))) > 0 OR image_uri IS NOT NULL",
                "item has no text, no title and no image: nothing to encode",
            ),
        ),
        unique_key=("_item_id", "_updated_at"),
    )


def event_rules(now: dt.datetime) -> TableRules:
    """``mmfs.core.events.rules`` as Spark predicates over the parsed columns (the scorer's feedback
    path checks the same rules in Python; ``tests/core/events/test_rules.py`` holds them equal)."""
    latest = _latest_allowed(now)
    sql = {
        "user_id_integral": "_user_id IS NOT NULL",
        "user_id_in_range": "_user_id IS NULL OR _user_id >= 0",
        "item_id_integral": "_item_id IS NOT NULL",
        "item_id_in_range": "_item_id IS NULL OR _item_id >= 0",
        "event_timestamp_parseable": "_event_timestamp IS NOT NULL",
        "event_timestamp_in_range": f"_event_timestamp IS NULL OR _event_timestamp BETWEEN TIMESTAMP'{sql_time(EARLIEST)}' AND TIMESTAMP'{latest}'",
        "label_in_0_1": "_label IN (0, 1)",
        "item_known": "_item_id IS NULL OR _item_known",
    }
    return TableRules(table="events", rules=tuple(Rule(name, body, reason(name, now)) for name, body in sql.items()),
                      unique_key=tuple(f"_{c}" for c in EVENT_KEY))


def canonical_item_rules() -> TableRules:
    """What the written items table must hold (checked on the output, never quarantined)."""
    return TableRules(
        table="items",
        rules=(
            Rule("created_not_before_updated", "created_timestamp >= updated_at", "created_timestamp precedes updated_at"),
        ),
        unique_key=("item_id", "updated_at"),
    )


def canonical_event_rules() -> TableRules:
    """What the written events table must hold (checked on the output, never quarantined)."""
    return TableRules(
        table="events",
        rules=(Rule("label_in_0_1", "label IN (0, 1)", "label must be 0 or 1"),),
        unique_key=EVENT_KEY,
    )


# -- transforms --------------------------------------------------------------------------------

def parse_items(raw_items: DataFrame) -> DataFrame:
    """Raw items with parsed ``_item_id``, ``_updated_at``, ``_created_timestamp`` and ``_has_text`` columns beside them."""
    created = F.col("created_at") if "created_at" in raw_items.columns else F.col("updated_at")
    return raw_items.withColumn("_created_raw", created.cast("string")).select(
        "*",
        F.expr(integral_sql("item_id")).alias("_item_id"),
        F.expr(timestamp_sql("updated_at")).alias("_updated_at"),
        F.expr(timestamp_sql("_created_raw")).alias("_created_timestamp"),
        (F.length(F.trim(F.coalesce(F.col("text"), F.lit("")))) > 0).alias("_has_text"),
    ).drop("_created_raw")


def parse_events(raw_events: DataFrame, known_item_ids: DataFrame) -> DataFrame:
    """Raw events with parsed ``_user_id``, ``_item_id``, ``_event_timestamp``, ``_label`` and ``_item_known``."""
    label = F.expr(
        "CASE lower(trim(cast(label AS STRING))) WHEN 'true' THEN 1 WHEN 'false' THEN 0 "
        f"ELSE {integral_sql('label')} END"
    )
    parsed = raw_events.select(
        "*",
        F.expr(integral_sql("user_id")).alias("_user_id"),
        F.expr(integral_sql("item_id")).alias("_item_id"),
        F.expr(timestamp_sql("event_timestamp")).alias("_event_timestamp"),
        label.alias("_label"),
    )
    known = known_item_ids.select(F.col("item_id").alias("_item_id")).distinct().withColumn("_item_known", F.lit(True))
    return parsed.join(known, on="_item_id", how="left").withColumn(
        "_item_known", F.coalesce(F.col("_item_known"), F.lit(False))
    )


def to_canonical_items(valid: DataFrame) -> DataFrame:
    """Valid parsed items -> the items table's columns."""
    return valid.select(
        F.col("_item_id").alias("item_id"),
        F.col("title").cast("string").alias("title"),
        F.col("text").cast("string").alias("text"),
        F.col("image_uri").cast("string").alias("image_uri"),
        F.col("_has_text").alias("has_text"),
        F.col("_updated_at").alias("updated_at"),
        F.col("_created_timestamp").alias("created_timestamp"),
    ).select(*columns(ITEMS_SCHEMA))


def to_canonical_events(valid: DataFrame) -> DataFrame:
    """Valid parsed events -> the events table's columns."""
    return valid.select(
        F.col("_user_id").alias("user_id"),
        F.col("_item_id").alias("item_id"),
        F.col("_event_timestamp").alias("event_timestamp"),
        F.col("_label").cast("int").alias("label"),
    ).select(*columns(EVENTS_SCHEMA))


def sample_users(items: DataFrame, events: DataFrame, max_users: int) -> tuple[DataFrame, DataFrame]:
    """Keep the ``max_users`` smallest user ids and only the items their events touch."""
    users = events.select(F.expr(integral_sql("user_id")).alias("_uid")).distinct().orderBy("_uid").limit(max_users)
    kept_events = events.join(users, F.expr(integral_sql("user_id")) == F.col("_uid"), how="inner").drop("_uid")
    touched = kept_events.select(F.expr(integral_sql("item_id")).alias("_iid")).distinct()
    kept_items = items.join(touched, F.expr(integral_sql("item_id")) == F.col("_iid"), how="inner").drop("_iid")
    return kept_items, kept_events


def transform(
    raw_items: DataFrame,
    raw_events: DataFrame,
    now: dt.datetime,
    max_invalid_fraction: float,
) -> dict:
    """Validate, quarantine and canonicalise. Returns the tables and the validation reports."""
    parsed_items = parse_items(raw_items)
    items_valid, items_quarantine, items_report = validate_and_split(
        parsed_items, item_rules(now), raw_items.columns, max_invalid_fraction
    )
    items = to_canonical_items(items_valid)
    parsed_events = parse_events(raw_events, items)
    events_valid, events_quarantine, events_report = validate_and_split(
        parsed_events, event_rules(now), raw_events.columns, max_invalid_fraction
    )
    events = to_canonical_events(events_valid)
    return {
        "items": items,
        "events": events,
        "quarantine_items": items_quarantine,
        "quarantine_events": events_quarantine,
        "reports": [items_report, events_report],
    }


def with_feedback(spark: SparkSession, events: DataFrame, out: str) -> DataFrame:
    """The events plus those recorded online since (``<out>/feedback_events``, written by the
    scorer's feedback path), so a full recompute keeps them."""
    landing = Path(out) / "feedback_events"
    if not any(landing.glob("*.parquet")):
        return events
    feedback = spark.read.schema(EVENTS_SCHEMA).parquet(str(landing)).select(*columns(EVENTS_SCHEMA))
    # One row per event key: an event the raw source holds as well is kept once, from the source
    # (the feedback path itself records each key once, and refuses a second label for it).
    key = list(EVENT_KEY)
    feedback = feedback.dropDuplicates(key).join(events.select(*key), on=key, how="left_anti")
    return events.unionByName(feedback)


def write_outputs(result: dict, out: str, source: str, image_root: str | None = None) -> list[ValidationReport]:
    """Check the canonical tables, then write them and the quarantine under ``out``; returns every report."""
    reports_ = list(result["reports"])
    for name, rules in (("items", canonical_item_rules()), ("events", canonical_event_rules())):
        reports_.append(assert_valid_output(result[name], rules))
    meta = {"job": "ingest", "source": source, "validation": [r.to_dict() for r in reports_]}
    # The folder images may come from (``encode-items`` refuses any other): by default the items
    # file's own folder, relative image paths resolve against it.
    write_table(result["items"], f"{out}/items", meta={**meta, "image_root": image_root})
    write_table(result["events"], f"{out}/events", meta=meta)
    write_table(result["quarantine_items"], f"{out}/quarantine/items", meta=meta)
    write_table(result["quarantine_events"], f"{out}/quarantine/events", meta=meta)
    return reports_


SOURCE_OPTIONS = ("--source", "--input", "--items", "--events", "--out", "--max-users", "--image-root")


def add_source_args(parser: argparse.ArgumentParser) -> None:
    """The options naming the raw inputs and the output root (also used by ``mmfs pipeline``)."""
    parser.add_argument("--source", choices=["movielens", "files"], required=True)
    parser.add_argument("--input", help="MovieLens folder (movies.csv, ratings.csv, tags.csv)")
    parser.add_argument("--items", help="items CSV/parquet (source=files)")
    parser.add_argument("--events", help="events CSV/parquet (source=files)")
    parser.add_argument("--out", required=True, help="output root; tables go to <out>/items, <out>/events")
    parser.add_argument("--max-users", type=int, default=None, help="keep only this many users (smallest ids) and their items")
    parser.add_argument("--image-root", default=None,
                        help="the folder item images must lie in (default: the --items file's folder); encode-items refuses others")


def source_argv(args: argparse.Namespace) -> list[str]:
    """The ingest command line for parsed source options."""
    argv = []
    for option in SOURCE_OPTIONS:
        value = getattr(args, option[2:].replace("-", "_"))
        if value is not None:
            argv += [option, str(value)]
    return argv


@job_main
def main(argv: list[str] | None = None) -> int:
    """``mmfs ingest``: read the source, transform, write."""
    parser = argparse.ArgumentParser(prog="mmfs ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    spark = spark_from_args(args, "mmfs-ingest")
    if args.source == "movielens":
        if not args.input:
            parser.error("--source movielens needs --input")
        raw_items, raw_events = read_movielens(spark, args.input)
        source = f"movielens:{args.input}"
    else:
        if not (args.items and args.events):
            parser.error("--source files needs --items and --events")
        raw_items, raw_events = read_files(spark, args.items, args.events)
        source = f"files:{args.items},{args.events}"
    image_root = args.image_root or (str(Path(args.items).resolve().parent) if args.source == "files" and "://" not in args.items else None)
    if args.max_users:
        raw_items, raw_events = sample_users(raw_items, raw_events, args.max_users)
    result = transform(raw_items, raw_events, dt.datetime.now(dt.timezone.utc), args.max_invalid_fraction)
    result["events"] = with_feedback(spark, result["events"], args.out)
    reports.print_reports(write_outputs(result, args.out, source, image_root), out_paths={
        "items": f"{args.out}/items", "events": f"{args.out}/events",
        "quarantine": f"{args.out}/quarantine/{{items,events}}",
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())

import datetime as dt
import json

import pytest
from pyspark.sql import functions as F

from mmfs.pipelines.jobs import ingest
from mmfs.pipelines.spark.sources import read_files
from mmfs.pipelines.spark.validation import ValidationError
from tests.support.times import ts

NOW = dt.datetime(2026, 1, 1)


def raw_items(spark, rows):
    return spark.createDataFrame(rows, "item_id string, title string, text string, image_uri string, updated_at string")


def raw_events(spark, rows):
    return spark.createDataFrame(rows, "user_id string, item_id string, event_timestamp string, label string")


ITEMS = [
    ("1", "Alien", "sci-fi horror", None, "2020-01-01T00:00:00Z"),
    ("2", "Heat", "", None, "2020-01-01 00:00:00"),  # empty text: kept and flagged
    ("3.0", "Up", "animation", None, "2020-01-01 00:00:00"),  # integral float id is fine
    ("x7", "Bad id", "t", None, "2020-01-01 00:00:00"),
    ("4", "", "  ", None, "2020-01-01 00:00:00"),  # nothing to encode
    ("5", "Future", "t", None, "2099-01-01 00:00:00"),
    ("1", "Alien", "sci-fi horror", None, "2020-01-01T00:00:00Z"),  # exact duplicate
]

EVENTS = [
    ("10", "1", "2021-05-01 10:00:00", "1"),
    ("10", "2", "2021-05-01 10:00:00.000001", "0"),
    ("11", "3", "2021-05-02 00:00:00", "true"),
    ("11", "3", "not a time", "1"),
    ("12", "1", "2021-05-02 00:00:00", "2"),
    ("12", "999", "2021-05-02 00:00:00", "1"),  # unknown item
    ("", "1", "2021-05-02 00:00:00", "1"),
    ("10", "1", "2021-05-01 10:00:00", "1"),  # duplicate event
]


def run(spark, items=ITEMS, events=EVENTS, max_invalid_fraction=1.0):
    return ingest.transform(raw_items(spark, items), raw_events(spark, events), NOW, max_invalid_fraction)


def test_valid_rows_become_canonical_and_every_bad_row_is_quarantined_with_its_rule(spark):
    result = run(spark)
    items = {r.item_id: r for r in result["items"].collect()}
    assert sorted(items) == [1, 2, 3]
    assert items[2].has_text is False and items[1].has_text is True
    assert items[1].updated_at == ts("2020-01-01 00:00:00")
    assert items[1].created_timestamp == items[1].updated_at

    quarantined_items = sorted((r.rule, json.loads(r.row_json)["item_id"]) for r in result["quarantine_items"].collect())
    assert quarantined_items == [
        ("duplicate_key", "1"),
        ("has_content", "4"),
        ("item_id_integral", "x7"),
        ("updated_at_in_range", "5"),
    ]
    events = sorted((r.user_id, r.item_id, r.event_timestamp, r.label) for r in result["events"].collect())
    assert events == [
        (10, 1, ts("2021-05-01 10:00:00"), 1),
        (10, 2, ts("2021-05-01 10:00:00.000001"), 0),
        (11, 3, ts("2021-05-02 00:00:00"), 1),
    ]
    quarantined_events = {(r.rule, r.row_json) for r in result["quarantine_events"].collect()}
    rules = sorted(rule for rule, _ in quarantined_events)
    assert rules == ["duplicate_key", "event_timestamp_parseable", "item_known", "label_in_0_1", "user_id_integral"]
    # nothing is lost: every input row is in exactly one of the outputs
    assert result["events"].count() + len(quarantined_events) == len(EVENTS)
    assert result["items"].count() + len(quarantined_items) == len(ITEMS)


def test_quarantine_keeps_the_raw_values_and_the_reason(spark):
    rows = run(spark)["quarantine_events"].filter(F.col("rule") == "label_in_0_1").collect()
    assert len(rows) == 1
    assert json.loads(rows[0].row_json) == {"user_id": "12", "item_id": "1", "event_timestamp": "2021-05-02 00:00:00", "label": "2"}
    assert rows[0].reason == "label must be 0 or 1"
    assert rows[0].table == "events"


def test_too_many_bad_rows_fail_with_table_rule_and_samples(spark):
    with pytest.raises(ValidationError) as excinfo:
        run(spark, max_invalid_fraction=0.2)
    message = str(excinfo.value)
    assert "table 'items'" in message
    assert "item_id_integral" in message and "x7" in message
    assert "failed rows by rule" in message


def test_input_report_counts_failures_per_rule(spark):
    report = run(spark)["reports"][1]
    assert report.table == "events" and report.stage == "input" and report.rows == len(EVENTS)
    failed = report.failed_rows_by_rule
    assert failed["label_in_0_1"] == 1
    assert failed["item_known"] == 1
    assert failed["duplicate_key"] == 1
    assert failed["event_timestamp_parseable"] == 1


def test_files_adapter_reads_csv_and_names_missing_columns(spark, tmp_path):
    items_csv = tmp_path / "items.csv"
    items_csv.write_text('item_id,title,text,image_uri,updated_at\n1,"Alien, the film",scary,,2020-01-01T00:00:00Z\n')
    events_csv = tmp_path / "events.csv"
    events_csv.write_text("user_id,item_id,event_timestamp\n1,1,2021-01-01T00:00:00Z\n")
    with pytest.raises(SystemExit, match=r"lacks required column\(s\) \['label'\]"):
        read_files(spark, str(items_csv), str(events_csv))
    events_csv.write_text("user_id,item_id,event_timestamp,label\n1,1,2021-01-01T00:00:00Z,1\n")
    items, events = read_files(spark, str(items_csv), str(events_csv))
    result = ingest.transform(items, events, NOW, 0.0)
    assert [r.title for r in result["items"].collect()] == ["Alien, the film"]
    assert result["events"].count() == 1


def test_feedback_events_recorded_online_join_the_next_full_run(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmfs.pipelines.spark.schemas import EVENTS_SCHEMA

    events = spark.createDataFrame([(1, 10, ts("2020-01-01 00:00:00"), 1)], EVENTS_SCHEMA)
    assert ingest.with_feedback(spark, events, str(tmp_path)).count() == 1  # no landing table: unchanged
    (tmp_path / "feedback_events").mkdir()
    pq.write_table(pa.table({"user_id": pa.array([1], pa.int64()), "item_id": pa.array([11], pa.int64()),
                             "event_timestamp": pa.array([dt.datetime(2020, 1, 2, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC")),
                             "label": pa.array([0], pa.int32())}), tmp_path / "feedback_events" / "feedback-1.parquet")
    rows = sorted(ingest.with_feedback(spark, events, str(tmp_path)).collect())
    assert [(r.user_id, r.item_id, r.event_timestamp, r.label) for r in rows] == [(1, 10, ts("2020-01-01 00:00:00"), 1),
                                                                                 (1, 11, ts("2020-01-02 00:00:00"), 0)]


def test_mmfs_pipeline_hands_every_source_option_to_ingest():
    """--image-root included: mmfs pipeline refused it before, so a files source whose images lie
    beside another folder could not run end to end."""
    import argparse

    from mmfs.pipelines.jobs import ingest

    parser = argparse.ArgumentParser()
    ingest.add_source_args(parser)
    argv = ["--source", "files", "--items", "i.parquet", "--events", "e.parquet", "--out", "o", "--image-root", "/imgs"]
    assert ingest.source_argv(parser.parse_args(argv)) == argv

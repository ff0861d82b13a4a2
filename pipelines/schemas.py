"""Schema constants of every table the jobs read and write: the contracts between stages.

Timestamps are UTC instants stored as microsecond parquet timestamps. Column lists here are
the ``select`` contracts at the ends of each transform.
"""
from __future__ import annotations

from pyspark.sql import types as T

# Raw inputs (../shared/DESIGN.md section 1). Adapters produce these columns.
RAW_ITEM_COLUMNS = ["item_id", "title", "text", "image_uri", "updated_at"]
RAW_EVENT_COLUMNS = ["user_id", "item_id", "event_timestamp", "label"]

ITEMS_SCHEMA = T.StructType([
    T.StructField("item_id", T.LongType(), False),
    T.StructField("title", T.StringType(), True),
    T.StructField("text", T.StringType(), True),
    T.StructField("image_uri", T.StringType(), True),
    T.StructField("has_text", T.BooleanType(), False),
    T.StructField("updated_at", T.TimestampType(), False),
    # When this content version became known; a back-dated correction has created > updated.
    T.StructField("created_timestamp", T.TimestampType(), False),
])

EVENTS_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType(), False),
    T.StructField("item_id", T.LongType(), False),
    T.StructField("event_timestamp", T.TimestampType(), False),
    T.StructField("label", T.IntegerType(), False),
])

ITEM_EMBEDDINGS_SCHEMA = T.StructType([
    T.StructField("item_id", T.LongType(), False),
    T.StructField("text_emb", T.ArrayType(T.FloatType(), False), False),
    T.StructField("image_emb", T.ArrayType(T.FloatType(), False), True),
    T.StructField("mm_emb", T.ArrayType(T.FloatType(), False), False),
    T.StructField("has_image", T.BooleanType(), False),
    T.StructField("encoder_id", T.StringType(), False),
    T.StructField("event_timestamp", T.TimestampType(), False),
    T.StructField("created_timestamp", T.TimestampType(), False),
])

# One row per event: the training-row skeleton with the user's history strictly before it.
SEQUENCES_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType(), False),
    T.StructField("item_id", T.LongType(), False),
    T.StructField("event_timestamp", T.TimestampType(), False),
    T.StructField("label", T.IntegerType(), False),
    T.StructField("hist_item_ids", T.ArrayType(T.LongType(), False), False),
    T.StructField("hist_timestamps", T.ArrayType(T.TimestampType(), False), False),
    T.StructField("hist_len", T.IntegerType(), False),
])

# Snapshot of a user's last N positives, stamped 1 microsecond after the newest positive it
# holds, so a Feast join (feature_ts <= entity_ts) at T only sees positives strictly before T.
SNAPSHOT_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType(), False),
    T.StructField("event_timestamp", T.TimestampType(), False),
    T.StructField("hist_item_ids", T.ArrayType(T.LongType(), False), False),
    T.StructField("hist_timestamps", T.ArrayType(T.TimestampType(), False), False),
    # The same instants as epoch microseconds: Feast's online store keeps timestamps to the second.
    T.StructField("hist_ts_us", T.ArrayType(T.LongType(), False), False),
    T.StructField("hist_len", T.IntegerType(), False),
])

TARGET_SIMILARITY_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType(), False),
    T.StructField("item_id", T.LongType(), False),
    T.StructField("event_timestamp", T.TimestampType(), False),
    T.StructField("label", T.IntegerType(), False),
    T.StructField("hist_item_ids", T.ArrayType(T.LongType(), False), False),
    T.StructField("hist_len", T.IntegerType(), False),
    # cos(mm_emb(target), mm_emb(hist_j)) as of event_timestamp; null where item j had no
    # embedding known at that time.
    T.StructField("hist_sim", T.ArrayType(T.FloatType(), True), False),
    T.StructField("target_has_emb", T.BooleanType(), False),
    T.StructField("encoder_id", T.StringType(), False),
])

# Cumulative counts of an item's events up to and including t, stamped t + 1 microsecond.
ITEM_STATS_SCHEMA = T.StructType([
    T.StructField("item_id", T.LongType(), False),
    T.StructField("event_timestamp", T.TimestampType(), False),
    T.StructField("impressions", T.LongType(), False),
    T.StructField("clicks", T.LongType(), False),
    T.StructField("ctr", T.FloatType(), False),
])

# The same counts per user (all the user's events, clicked or not), stamped the same way: the
# user's own click rate, the personal signal that a user new since training still carries.
USER_STATS_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType(), False),
    T.StructField("event_timestamp", T.TimestampType(), False),
    T.StructField("user_impressions", T.LongType(), False),
    T.StructField("user_clicks", T.LongType(), False),
    T.StructField("user_ctr", T.FloatType(), False),
])

QUARANTINE_SCHEMA = T.StructType([
    T.StructField("table", T.StringType(), False),
    T.StructField("rule", T.StringType(), False),
    T.StructField("reason", T.StringType(), False),
    T.StructField("row_json", T.StringType(), False),
    T.StructField("quarantined_at", T.TimestampType(), False),
])


def columns(schema: T.StructType) -> list[str]:
    return [field.name for field in schema.fields]

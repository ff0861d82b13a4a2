"""Every table the pipeline and the feedback path read and write, each declared once.

A ``Table`` is a name and its ``Column``s. ``Table.arrow()`` gives its pyarrow schema (used by the
feedback path, parity and the training set); ``mmfs.pipelines.spark.schemas.spark_schema(table)`` gives
the Spark ``StructType`` of the same columns (used by the jobs' ``select`` contracts). Timestamps
are UTC instants stored as microsecond parquet timestamps.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# Column types: the few the tables use. A list column is ``list_of=True`` over one of these.
INT64, INT32, FLOAT32, FLOAT64, BOOL, STRING, TIMESTAMP = "int64", "int32", "float32", "float64", "bool", "string", "timestamp"
FLOAT32_LIST = "float32_list"  # a list of nullable float32: a list column over it is a matrix (the served s_j, C x L)
TIME_UNIT = "us"  # every stored timestamp: microseconds, UTC
TIME_ZONE = "UTC"

_ARROW = {INT64: pa.int64(), INT32: pa.int32(), FLOAT32: pa.float32(), FLOAT64: pa.float64(), BOOL: pa.bool_(), STRING: pa.string(),
          TIMESTAMP: pa.timestamp(TIME_UNIT, tz=TIME_ZONE), FLOAT32_LIST: pa.list_(pa.field("element", pa.float32(), True))}


@dataclass(frozen=True)
class Column:
    """One column of a table: name, type, nullability, and whether it is a list of ``type``."""

    name: str
    type: str
    nullable: bool = False
    list_of: bool = False  # a list of ``type``
    elements_nullable: bool = False

    def arrow(self) -> pa.Field:
        """This column as a pyarrow field (a list column becomes ``list<element: type>``)."""
        base = _ARROW[self.type]
        kind = pa.list_(pa.field("element", base, self.elements_nullable)) if self.list_of else base
        return pa.field(self.name, kind, self.nullable)


@dataclass(frozen=True)
class Table:
    """A table's name and its columns, in order."""

    name: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        """The column names, in order."""
        return [c.name for c in self.columns]

    def arrow(self) -> pa.Schema:
        """The table's pyarrow schema."""
        return pa.schema([c.arrow() for c in self.columns])

    def only(self, *names: str, name: str | None = None) -> "Table":
        """The same columns restricted to ``names``, in this table's order."""
        return Table(name or self.name, tuple(c for c in self.columns if c.name in names))


def _c(name, type_, nullable=False):
    return Column(name, type_, nullable)


def _list(name, type_, nullable=False, elements_nullable=False):
    return Column(name, type_, nullable, list_of=True, elements_nullable=elements_nullable)


# Raw inputs (../shared/DESIGN.md section 1): the columns an adapter produces.
RAW_ITEM_COLUMNS = ["item_id", "title", "text", "image_uri", "updated_at"]
RAW_EVENT_COLUMNS = ["user_id", "item_id", "event_timestamp", "label"]

ITEMS = Table("items", (
    _c("item_id", INT64), _c("title", STRING, True), _c("text", STRING, True), _c("image_uri", STRING, True),
    _c("has_text", BOOL), _c("updated_at", TIMESTAMP),
    # When this content version became known; a back-dated correction has created > updated.
    _c("created_timestamp", TIMESTAMP),
))

EVENTS = Table("events", (_c("user_id", INT64), _c("item_id", INT64), _c("event_timestamp", TIMESTAMP), _c("label", INT32)))
# Events posted to the scorer's feedback path, kept for ``mmfs ingest``'s next run.
FEEDBACK_EVENTS = Table("feedback_events", EVENTS.columns)
# Events mmfs stream did not apply online: older than the online row of their user or item (the batch path takes them).
LATE_EVENTS = Table("late_events", EVENTS.columns)

ITEM_EMBEDDINGS = Table("item_embeddings", (
    _c("item_id", INT64), _list("text_emb", FLOAT32), _list("image_emb", FLOAT32, nullable=True), _list("mm_emb", FLOAT32),
    _c("has_image", BOOL), _c("encoder_id", STRING), _c("event_timestamp", TIMESTAMP), _c("created_timestamp", TIMESTAMP),
))

# One row per event: the training-row skeleton with the user's history strictly before it.
SEQUENCES = Table("sequences", (
    *EVENTS.columns, _list("hist_item_ids", INT64), _list("hist_timestamps", TIMESTAMP), _c("hist_len", INT32),
))

# Snapshot of a user's last N positives, stamped after the newest positive it holds
# (``mmfs.core.features.snapshot``), so a Feast join at T only sees positives strictly before T.
USER_SEQUENCE_SNAPSHOTS = Table("user_sequence_snapshots", (
    _c("user_id", INT64), _c("event_timestamp", TIMESTAMP), _list("hist_item_ids", INT64), _list("hist_timestamps", TIMESTAMP),
    # The same instants as epoch microseconds: Feast's online store keeps timestamps to the second.
    _list("hist_ts_us", INT64), _c("hist_len", INT32),
))
USER_SEQUENCE_CURRENT = Table("user_sequence_current", USER_SEQUENCE_SNAPSHOTS.columns)

# What the similarity rule reads per row (the Spark job, the feedback path and parity alike).
SIMILARITY_INPUT = SEQUENCES.only("user_id", "item_id", "event_timestamp", "label", "hist_item_ids", "hist_len",
                                  name="similarity_input")

TARGET_SIMILARITY = Table("target_similarity", (
    *SIMILARITY_INPUT.columns,
    # cos(mm_emb(target), mm_emb(hist_j)) as of event_timestamp; null where item j had no
    # embedding known at that time.
    _list("hist_sim", FLOAT32, elements_nullable=True), _c("target_has_emb", BOOL), _c("encoder_id", STRING),
))

# Cumulative counts of an item's events up to and including t, stamped after t.
ITEM_STATS = Table("item_stats", (
    _c("item_id", INT64), _c("event_timestamp", TIMESTAMP), _c("impressions", INT64), _c("clicks", INT64), _c("ctr", FLOAT32),
))

# The same counts per user (all the user's events, clicked or not), stamped the same way: the
# user's own click rate, the personal signal that a user new since training still carries.
USER_STATS = Table("user_stats", (
    _c("user_id", INT64), _c("event_timestamp", TIMESTAMP), _c("user_impressions", INT64), _c("user_clicks", INT64),
    _c("user_ctr", FLOAT32),
))

# What the encoders produce for one distinct content (title, text, image_uri), keyed by its hash;
# the same rows with the encoder's key are the encoder cache that incremental runs reuse.
ENCODED = Table("encoded", (
    _c("content_hash", STRING), _list("text_emb", FLOAT32), _list("image_emb", FLOAT32, nullable=True),
    _c("image_error", STRING, True), _c("image_note", STRING, True),
))
ENCODER_CACHE = Table("encoder_cache", (_c("encoder_key", STRING), *ENCODED.columns))

QUARANTINE = Table("quarantine", (
    _c("table", STRING), _c("rule", STRING), _c("reason", STRING), _c("row_json", STRING), _c("quarantined_at", TIMESTAMP),
))

# The rows a training set is built for: one per event (``mmfs training-set``'s entity frame).
ENTITY = Table("entity", EVENTS.columns)

# The served-feature log (mmfs.serving.request_log): one row per POST /score, what the scorer used, as
# it used it; status strings are present / stale / missing. mmfs consistency reads it.
REQUEST_LOG = Table("request_log", (
    _c("request_id", STRING), _c("requested_at", TIMESTAMP), _c("logged_at", TIMESTAMP), _c("user_id", INT64),
    _c("model", STRING), _c("feature_service", STRING), _list("item_ids", INT64), _list("scores", FLOAT64, elements_nullable=True),
    _c("seq_status", STRING), _c("seq_timestamp", TIMESTAMP, True), _list("hist_item_ids", INT64),
    _c("user_stats_status", STRING, True), _c("user_impressions", FLOAT64, True), _c("user_clicks", FLOAT64, True),
    _c("user_ctr", FLOAT64, True),
    _list("item_stats_status", STRING, True), _list("impressions", FLOAT64, True, True), _list("clicks", FLOAT64, True, True),
    _list("ctr", FLOAT64, True, True), _list("embedding_status", STRING, True),
    _list("hist_sim", FLOAT32_LIST, True, True),
))

ALL = (ITEMS, EVENTS, FEEDBACK_EVENTS, LATE_EVENTS, ITEM_EMBEDDINGS, SEQUENCES, USER_SEQUENCE_SNAPSHOTS, USER_SEQUENCE_CURRENT,
       TARGET_SIMILARITY, ITEM_STATS, USER_STATS, ENCODED, ENCODER_CACHE, QUARANTINE, REQUEST_LOG)

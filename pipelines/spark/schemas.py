"""The tables' Spark schemas, built from their one declaration in ``mmfs.core.contracts.tables``.

The column lists here are the ``select`` contracts at the ends of each transform.
"""
from __future__ import annotations

from pyspark.sql import types as T

from mmfs.core.contracts import tables as C
from mmfs.core.contracts.tables import RAW_EVENT_COLUMNS, RAW_ITEM_COLUMNS  # noqa: F401 - the adapters' contract

_SPARK = {C.INT64: T.LongType(), C.INT32: T.IntegerType(), C.FLOAT32: T.FloatType(), C.BOOL: T.BooleanType(),
          C.STRING: T.StringType(), C.TIMESTAMP: T.TimestampType(), C.FLOAT64: T.DoubleType(),
          C.FLOAT32_LIST: T.ArrayType(T.FloatType(), True)}


def spark_schema(table: C.Table) -> T.StructType:
    """``table``'s columns as a Spark StructType (same names, order, types and nullability)."""
    fields = []
    for c in table.columns:
        kind = T.ArrayType(_SPARK[c.type], c.elements_nullable) if c.list_of else _SPARK[c.type]
        fields.append(T.StructField(c.name, kind, c.nullable))
    return T.StructType(fields)


ITEMS_SCHEMA = spark_schema(C.ITEMS)
EVENTS_SCHEMA = spark_schema(C.EVENTS)
ITEM_EMBEDDINGS_SCHEMA = spark_schema(C.ITEM_EMBEDDINGS)
SEQUENCES_SCHEMA = spark_schema(C.SEQUENCES)
SNAPSHOT_SCHEMA = spark_schema(C.USER_SEQUENCE_SNAPSHOTS)
TARGET_SIMILARITY_SCHEMA = spark_schema(C.TARGET_SIMILARITY)
ITEM_STATS_SCHEMA = spark_schema(C.ITEM_STATS)
USER_STATS_SCHEMA = spark_schema(C.USER_STATS)
ENCODED_SCHEMA = spark_schema(C.ENCODED)
ENCODER_CACHE_SCHEMA = spark_schema(C.ENCODER_CACHE)
QUARANTINE_SCHEMA = spark_schema(C.QUARANTINE)


def columns(schema: T.StructType) -> list[str]:
    """The schema's column names, in order."""
    return [field.name for field in schema.fields]

"""Each table is declared once: its Arrow and Spark schemas are two views of the same columns."""
import pyarrow as pa

from mmfs.core.contracts import tables as C


def test_arrow_and_spark_schemas_agree_column_for_column():
    from pyspark.sql import types as T

    from mmfs.pipelines.spark.schemas import spark_schema

    spark_types = {T.LongType(): pa.int64(), T.IntegerType(): pa.int32(), T.FloatType(): pa.float32(), T.DoubleType(): pa.float64(),
                   T.BooleanType(): pa.bool_(), T.StringType(): pa.string(), T.TimestampType(): pa.timestamp("us", tz="UTC")}

    def same(a: pa.DataType, s, where) -> None:
        if isinstance(s, T.ArrayType):
            assert pa.types.is_list(a) and a.value_field.nullable == s.containsNull, where
            same(a.value_type, s.elementType, where)
        else:
            assert a == spark_types[s], where

    for table in C.ALL:
        arrow, spark = table.arrow(), spark_schema(table)
        assert arrow.names == [f.name for f in spark.fields] == table.names, table.name
        for a, s in zip(arrow, spark.fields):
            assert a.nullable == s.nullable, (table.name, a.name)
            same(a.type, s.dataType, (table.name, a.name))


def test_derived_tables_keep_their_parents_columns():
    assert C.FEEDBACK_EVENTS.names == C.EVENTS.names == C.ENTITY.names
    assert C.SEQUENCES.names[:4] == C.EVENTS.names
    assert C.TARGET_SIMILARITY.names[:6] == C.SIMILARITY_INPUT.names
    assert C.ENCODER_CACHE.names == ["encoder_key", *C.ENCODED.names]
    assert C.ITEM_EMBEDDINGS.arrow().field("image_emb").nullable and not C.ITEM_EMBEDDINGS.arrow().field("mm_emb").nullable

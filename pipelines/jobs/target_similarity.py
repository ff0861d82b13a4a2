"""target_similarity: s_j = cos(mm_emb(target), mm_emb(hist_j)) for every training row.

    spark-submit pipelines/jobs/target_similarity.py --root out/ml

Reads ``<root>/sequences`` and ``<root>/item_embeddings``; writes ``<root>/target_similarity``.
Embeddings are taken point-in-time: for a row at time T, each item's newest version with
event_timestamp <= T and created_timestamp <= T (what the online store held at T). The values
come from ``mmfs.core.features.similarity.target_similarity``, the function the online scorer imports.
"""
from __future__ import annotations

import argparse
import sys
from typing import Iterator

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from mmfs.pipelines.spark import reports
from mmfs.core.features.item_index import ItemEmbeddingIndex
from mmfs.core.features.similarity import similarity_batch
from mmfs.pipelines.spark.args import add_common_args, spark_from_args
from mmfs.pipelines.spark.schemas import TARGET_SIMILARITY_SCHEMA, columns
from mmfs.pipelines.spark.table_io import job_main, read_meta, read_table, write_table
from mmfs.pipelines.spark.validation import Rule, TableRules, assert_valid_output


def output_rules() -> TableRules:
    """Output rules of ``target_similarity``: similarities in [-1, 1], one per history item, one row per event key."""
    return TableRules(
        table="target_similarity",
        rules=(
            Rule("similarity_in_range", "forall(hist_sim, s -> s IS NULL OR (s >= -1 AND s <= 1 AND NOT isnan(s)))",
                 "similarities must lie in [-1, 1]"),
            Rule("similarity_aligned", "size(hist_sim) = hist_len AND size(hist_item_ids) = hist_len",
                 "one similarity per history item"),
        ),
        unique_key=("user_id", "item_id", "event_timestamp"),
    )


def build_index(item_embeddings: DataFrame) -> ItemEmbeddingIndex:
    """Collect the (small) versioned mm_emb table once; workers get it as a broadcast."""
    table = item_embeddings.select("item_id", "event_timestamp", "created_timestamp", "mm_emb").toArrow()
    return ItemEmbeddingIndex.from_arrow(table, "mm_emb", "item_embeddings")


def transform(sequences: DataFrame, item_embeddings: DataFrame, encoder_id: str) -> DataFrame:
    """Sequences -> ``target_similarity`` rows: each row's ``hist_sim`` and ``target_has_emb`` from the
    point-in-time mm_emb index (broadcast to the workers), tagged with ``encoder_id``."""
    spark: SparkSession = sequences.sparkSession
    index = spark.sparkContext.broadcast(build_index(item_embeddings))
    schema = TARGET_SIMILARITY_SCHEMA
    source = sequences.select("user_id", "item_id", "event_timestamp", "label", "hist_item_ids", "hist_len")
    mapped_schema = T.StructType(source.schema.fields + [schema["hist_sim"], schema["target_has_emb"]])

    def compute(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield similarity_batch(batch, index.value)

    return source.mapInArrow(compute, schema=mapped_schema).withColumn("encoder_id", F.lit(encoder_id)).select(
        *columns(schema)
    )


@job_main
def main(argv: list[str] | None = None) -> int:
    """``mmfs target-similarity``: compute, validate and write ``<root>/target_similarity[_<version>]``. Returns 0."""
    parser = argparse.ArgumentParser(prog="mmfs target-similarity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="table root with sequences and item_embeddings")
    parser.add_argument("--version", default="", help="a backfilled encoder's tables: v2 reads item_embeddings_v2 "
                        "and writes target_similarity_v2, leaving v1's as they are")
    add_common_args(parser)
    args = parser.parse_args(argv)
    spark = spark_from_args(args, "mmfs-target-similarity")
    suffix = f"_{args.version}" if args.version else ""
    embeddings_path = f"{args.root}/item_embeddings{suffix}"
    identity = read_meta(spark, embeddings_path)["encoder_identity"]
    embeddings = read_table(spark, embeddings_path)
    encoder_ids = [r[0] for r in embeddings.select("encoder_id").distinct().collect()]
    if encoder_ids != [identity["encoder_id"]]:
        raise SystemExit(f"{embeddings_path} mixes encoders {encoder_ids}; expected only {identity['encoder_id']}")
    result = transform(read_table(spark, f"{args.root}/sequences"), embeddings, identity["encoder_id"]).persist()
    report = assert_valid_output(result, output_rules())
    write_table(result, f"{args.root}/target_similarity{suffix}",
                meta={"job": "target_similarity", "encoder_identity": identity, "validation": report.to_dict()})
    reports.print_reports([report], {f"target_similarity{suffix}": f"{args.root}/target_similarity{suffix}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())

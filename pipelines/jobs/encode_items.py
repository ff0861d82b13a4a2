"""encode_items: item text (BERT-family) and images (EfficientNet-Lite0 or CLIP) -> embeddings.

    spark-submit pipelines/jobs/encode_items.py --root out/ml [--image-model clip:ViT-B-32 --clip-weights f.bin]

Reads ``<root>/items``; writes ``<root>/item_embeddings`` with ``text_emb``, ``image_emb``, the fused
``mm_emb`` (L2-normalised PCA(text) and PCA(image) parts concatenated, the MMCTR "V4" strategy),
``has_image``, ``encoder_id``, ``event_timestamp`` (the item's updated_at) and
``created_timestamp``. The PCA is fitted in Spark and saved beside the table as ``_pca.npz``; the
encoder identity (models, weight checksums, dimensions, PCA hash) is in its ``_mmfs_meta.json``.
Images that cannot be used are quarantined in ``<root>/quarantine/item_images``; their items keep
the text embedding with ``has_image=false``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import asdict, replace

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mmfs.core.features.fusion import pca_artifact
from mmfs.pipelines.spark import reports
from mmfs.pipelines.spark.encoding import CACHE_COLUMNS, PhaseTimer, content_hash, encode, fit_pca, with_mm_emb
from mmfs.pipelines.encoders import NO_IMAGE_MODEL, EncoderConfig, load_image_encoder, load_text_encoder
from mmfs.pipelines.images import NO_IMAGE_ROOT
from mmfs.pipelines.spark.args import add_common_args, spark_from_args
from mmfs.pipelines.spark.schemas import ENCODED_SCHEMA, ITEM_EMBEDDINGS_SCHEMA, QUARANTINE_SCHEMA, columns
from mmfs.pipelines.spark.session import task_progress
from mmfs.pipelines.spark.table_io import job_main, read_meta, read_side_file, read_table, table_exists, write_table
from mmfs.pipelines.spark.validation import Rule, TableRules, assert_valid_output, unit_vector_rule, validate_and_split

log = logging.getLogger("mmfs.encode_items")

DEFAULT_MM_DIM = 64

def embedding_rules(text_dim: int, image_dim: int | None, mm_dim: int) -> TableRules:
    """Output rules of ``item_embeddings``: unit-norm vectors of the given sizes, ``has_image`` consistent
    with ``image_emb``, one row per (item_id, event_timestamp)."""
    rules = [unit_vector_rule("text_emb", text_dim), unit_vector_rule("mm_emb", mm_dim)]
    if image_dim:
        rules.append(unit_vector_rule("image_emb", image_dim, nullable=True))
    rules.append(Rule("has_image_matches", "has_image = (image_emb IS NOT NULL)", "has_image must say whether image_emb is set"))
    return TableRules("item_embeddings", tuple(rules), unique_key=("item_id", "event_timestamp"))


def image_quarantine(encoded: DataFrame) -> DataFrame:
    """Quarantine rows (``QUARANTINE_SCHEMA``) for the items whose image could not be used."""
    return encoded.filter(F.col("image_error").isNotNull()).select(
        F.lit("item_images").alias("table"),
        F.lit("image_decode").alias("rule"),
        F.col("image_error").alias("reason"),
        F.to_json(F.struct("item_id", "updated_at")).alias("row_json"),
        F.current_timestamp().alias("quarantined_at"),
    ).select(*columns(QUARANTINE_SCHEMA))


def identity_of(config: EncoderConfig, mm_dim: int, text_dim_pca: int, image_dim_pca: int | None) -> dict:
    """Load the encoders once on the driver: fail early on bad weights, and checksum them."""
    text = load_text_encoder(config)
    image = load_image_encoder(config)
    identity = {
        "text": {"model": text.name, "weights_sha256": text.weights_sha256, "dim": text.dim},
        "image": None if image is None else {"model": image.name, "weights_sha256": image.weights_sha256, "dim": image.dim},
        "mm_dim": mm_dim,
        "pca_dims": {"text": text_dim_pca, "image": image_dim_pca},
    }
    del text, image
    return identity


class EncoderChanged(RuntimeError):
    """An incremental run found encoders other than the ones that wrote the table."""

    pass


def encoder_key(identity: dict, config: EncoderConfig) -> str:
    """What makes two encodings of one content interchangeable: the models, their weights, dims and
    the text truncation. The PCA is not in it: it is fitted on top, per table."""
    key = {"text": identity["text"], "image": identity["image"], "text_max_length": config.text_max_length}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def transform(spark: SparkSession, items: DataFrame, config: EncoderConfig, mm_dim: int, staging: str,
              partitions: int, max_invalid_fraction: float, timer: PhaseTimer | None = None,
              cache: DataFrame | None = None, pca: dict | None = None, expected_key: str | None = None) -> dict:
    """Encode ``items`` and fuse their embeddings.

    With ``cache`` (earlier encodings: ``CACHE_COLUMNS``), only contents whose hash the cache lacks
    for this encoder are encoded. With ``pca`` (an existing table's), the PCA is reused instead of
    fitted, so the encoder id and every unchanged item's mm_emb stay as they were.
    """
    phase = (timer or PhaseTimer()).phase
    with_images = items.filter(F.col("image_uri").isNotNull()).count()
    if with_images == 0 and config.image_model != NO_IMAGE_MODEL:
        log.warning("no item has an image_uri: the image encoder is not used and mm_emb is text-only")
        config = replace(config, image_model=NO_IMAGE_MODEL)
    text_k = mm_dim if config.image_model == NO_IMAGE_MODEL else mm_dim // 2
    image_k = None if config.image_model == NO_IMAGE_MODEL else mm_dim - text_k
    with phase("load encoders on the driver (weights check and checksums)"):
        identity = identity_of(config, mm_dim, text_k, image_k)
    key = encoder_key(identity, config)
    if expected_key is not None and key != expected_key:
        raise EncoderChanged(
            f"the encoders differ from the ones that wrote the table (key {key}, table's {expected_key}): an incremental "
            "run cannot mix them. Re-encode in full, or backfill into a new versioned table (--table item_embeddings_v2)")

    hashed = items.withColumn("content_hash", content_hash())
    contents = hashed.select("content_hash", "title", "text", "image_uri").dropDuplicates(["content_hash"])
    cached = None
    if cache is not None:
        cached = cache.filter(F.col("encoder_key") == key).select(*columns(ENCODED_SCHEMA)).dropDuplicates(["content_hash"])
        contents = contents.join(cached.select("content_hash"), on="content_hash", how="left_anti")
    # Stage the encoder output once: the PCA fit, the projection and the cache all read it.
    with phase("encode in Spark workers"), task_progress(spark, "encode"):
        encode(contents, config, partitions).write.mode("overwrite").parquet(staging)
    fresh = spark.read.parquet(staging)
    encodings = fresh if cached is None else fresh.unionByName(cached)
    encoded = hashed.select("item_id", "content_hash", "updated_at", "created_timestamp").join(
        encodings, on="content_hash", how="left"
    ).select("item_id", "text_emb", "image_emb", "image_error", "image_note", "updated_at", "created_timestamp")
    if pca is None:
        with phase("fit PCA in Spark"):
            pca = {f"text_{k}": v for k, v in fit_pca(fresh, "text_emb", text_k).items()}
            if image_k is not None:
                pictured = fresh.filter(F.col("image_emb").isNotNull())
                if pictured.limit(1).count() == 0:
                    raise RuntimeError("every image failed to decode: see the image quarantine; refusing to fit an image PCA on nothing")
                pca.update({f"image_{k}": v for k, v in fit_pca(pictured, "image_emb", image_k).items()})
    pca_bytes, pca_sha = pca_artifact(pca)
    identity["pca_sha256"] = pca_sha
    encoder_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    identity["encoder_id"] = encoder_id
    identity["encoder_key"] = key

    embeddings = with_mm_emb(encoded, pca, encoder_id)
    rules = embedding_rules(identity["text"]["dim"], identity["image"] and identity["image"]["dim"], mm_dim)
    with phase("fuse and validate"):
        good, quarantine, input_report = validate_and_split(embeddings, rules, columns(ITEM_EMBEDDINGS_SCHEMA), max_invalid_fraction)
    return {
        "item_embeddings": good,
        "quarantine_embeddings": quarantine,
        "quarantine_images": image_quarantine(encoded),
        "new_encodings": fresh.select(F.lit(key).alias("encoder_key"), "*").select(*CACHE_COLUMNS),
        "identity": identity,
        "pca_bytes": pca_bytes,
        "rules": rules,
        "reports": [input_report],
        "config": config,
    }


def image_roots_of(spark: SparkSession, root: str) -> list[str]:
    """The image root ingest recorded for the items table, or none when it recorded none (then every
    image is refused unless --image-root names one: a job must not open any file the items name).
    A metadata file that is missing or cannot be read is an error naming it: read as "no root", it
    would turn a run with images into a text-only one, every image refused."""
    try:
        meta = read_meta(spark, f"{root}/items")
    except FileNotFoundError as exc:
        raise SystemExit(f"{exc}; the image root ingest records there is unknown: rerun mmfs ingest, or pass --image-root") from exc
    except ValueError as exc:  # not JSON (json.JSONDecodeError and UnicodeDecodeError are ValueErrors)
        raise SystemExit(f"{root}/items/_mmfs_meta.json cannot be read ({exc}): rerun mmfs ingest, or pass --image-root") from exc
    recorded = meta.get("image_root")
    return [recorded] if recorded else [NO_IMAGE_ROOT]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The ``mmfs encode-items`` command line."""
    parser = argparse.ArgumentParser(prog="mmfs encode-items", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="table root written by ingest")
    defaults = EncoderConfig()
    parser.add_argument("--text-model", default=defaults.text_model, help="'minilm' (packaged), a local folder or a cached hub id")
    parser.add_argument("--image-model", default=defaults.image_model, help="'efficientnet-lite0' (packaged), 'clip:<arch>' or 'none'")
    parser.add_argument("--clip-weights", default=None, help="CLIP weights: a local file, or an open_clip tag in the hub cache")
    parser.add_argument("--allow-random-clip-weights", action="store_true", help="TEST ONLY: CLIP with random weights")
    parser.add_argument("--mm-dim", type=int, default=DEFAULT_MM_DIM, help="fused embedding size (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--text-max-length", type=int, default=defaults.text_max_length)
    parser.add_argument("--device", default=defaults.device, help="auto (CUDA if available), cpu or cuda[:n]")
    parser.add_argument("--partitions", type=int, default=0, help="encoding tasks (default: Spark's parallelism)")
    parser.add_argument("--image-root", action="append", default=None,
                        help="a folder item images must lie in (repeatable; default: the one ingest recorded, the items file's folder); "
                             "images elsewhere are quarantined")
    parser.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels,
                        help="images declaring more pixels are quarantined undecoded (default %(default)s)")
    parser.add_argument("--incremental", action="store_true",
                        help="encode only contents the encoder cache lacks, and keep the table's PCA (same encoder id)")
    parser.add_argument("--table", default="item_embeddings",
                        help="output table under --root (a backfill with a new encoder writes e.g. item_embeddings_v2)")
    add_common_args(parser)
    return parser.parse_args(argv)


def encoder_config(args: argparse.Namespace, recorded_roots: list[str], parallelism: int, local: bool) -> EncoderConfig:
    """The encoders as the command line asks; images may come only from ``--image-root`` (else the
    root ingest recorded)."""
    return EncoderConfig(
        text_model=args.text_model,
        image_model=args.image_model,
        clip_weights=args.clip_weights,
        allow_random_weights=args.allow_random_clip_weights,
        text_max_length=args.text_max_length,
        batch_size=args.batch_size,
        device=args.device,
        image_roots=tuple(args.image_root or recorded_roots),
        max_image_pixels=args.max_image_pixels,
        # Local mode runs one Python worker per core: one torch thread each avoids oversubscription.
        torch_threads=max(1, (os.cpu_count() or 1) // parallelism) if local else 0,
    )


def previous_run(spark: SparkSession, table_path: str) -> tuple[dict, str]:
    """An incremental run's inputs from the last good output: its PCA and its encoder key."""
    if not table_exists(spark, table_path):
        raise SystemExit(f"--incremental needs an earlier run's {table_path}: run encode-items without it first")
    expected_key = read_meta(spark, table_path)["encoder_identity"].get("encoder_key")
    if expected_key is None:
        raise SystemExit(f"{table_path} predates the encoder cache: run encode-items once without --incremental")
    with np.load(io.BytesIO(read_side_file(spark, table_path, "_pca.npz"))) as saved:
        return {k: saved[k] for k in saved.files}, expected_key


@job_main
def main(argv: list[str] | None = None) -> int:
    """``mmfs encode-items``: encode ``<root>/items`` into ``<root>/item_embeddings`` (or ``--table``),
    write the quarantines and update the encoder cache. Returns 0."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mmfs").setLevel(logging.INFO)
    args = parse_args(argv)
    spark = spark_from_args(args, "mmfs-encode-items")
    parallelism = spark.sparkContext.defaultParallelism
    local = spark.sparkContext.master.startswith("local")
    config = encoder_config(args, [] if args.image_root else image_roots_of(spark, args.root), parallelism, local)
    staging = f"{args.root}/_staging/encode-{uuid.uuid4().hex[:12]}"
    timer = PhaseTimer()
    phase = timer.phase
    start = time.perf_counter()
    table_path, cache_path = f"{args.root}/{args.table}", f"{args.root}/encoder_cache"
    cache = read_table(spark, cache_path) if table_exists(spark, cache_path) else None
    pca, expected_key = previous_run(spark, table_path) if args.incremental else (None, None)
    try:
        result = transform(spark, read_table(spark, f"{args.root}/items"), config, args.mm_dim, staging,
                           args.partitions or parallelism, args.max_invalid_fraction, timer,
                           cache=cache if args.incremental else None, pca=pca, expected_key=expected_key)
        good = result["item_embeddings"]
        encoded_now = result["new_encodings"].count()
        with phase("validate output"):
            output_report = assert_valid_output(good, result["rules"])
        n_items = output_report.rows
        elapsed = time.perf_counter() - start
        meta = {
            "job": "encode_items",
            "encoder_identity": result["identity"],
            "config": asdict(result["config"]),
            "items": n_items,
            "incremental": args.incremental,
            "contents_encoded": encoded_now,
            "seconds": round(elapsed, 1),
            "phase_seconds": timer.seconds,
            "validation": [r.to_dict() for r in result["reports"] + [output_report]],
        }
        with phase("write"):
            write_table(good, table_path, meta=meta, extra_files={"_pca.npz": result["pca_bytes"]})
        write_table(result["quarantine_embeddings"], f"{args.root}/quarantine/item_embeddings", meta=meta)
        write_table(result["quarantine_images"], f"{args.root}/quarantine/item_images", meta=meta)
        with phase("update the encoder cache"):
            # Last, as every output above reads the old cache. A run killed before this re-encodes
            # those contents next time, nothing worse.
            kept = result["new_encodings"] if cache is None else cache.select(*CACHE_COLUMNS).unionByName(result["new_encodings"])
            write_table(kept.dropDuplicates(["encoder_key", "content_hash"]), cache_path,
                        meta={"job": "encode_items", "key": "(encoder_key, content_hash)"})
    finally:
        spark._jvm.org.apache.hadoop.fs.Path(staging).getFileSystem(spark._jsc.hadoopConfiguration()).delete(
            spark._jvm.org.apache.hadoop.fs.Path(staging), True
        )
    reports.print_reports(result["reports"] + [output_report], {
        "item_embeddings": f"{args.root}/item_embeddings",
        "quarantine": f"{args.root}/quarantine/{{item_embeddings,item_images}}",
    })
    print(f"encoder_id {result['identity']['encoder_id']}: {n_items} items in {elapsed:.1f}s ({n_items / elapsed:.1f} items/s); "
          f"{encoded_now} contents encoded, the rest from the encoder cache" if args.incremental else
          f"encoder_id {result['identity']['encoder_id']}: {n_items} items in {elapsed:.1f}s ({n_items / elapsed:.1f} items/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import asdict, replace
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.spark import reports
from pipelines.encoders import NO_IMAGE_MODEL, NO_IMAGE_ROOT, EncoderConfig, decode_image, load_image_encoder, load_text_encoder
from pipelines.spark.args import add_common_args, spark_from_args
from pipelines.spark.schemas import ITEM_EMBEDDINGS_SCHEMA, QUARANTINE_SCHEMA, columns
from pipelines.spark.session import task_progress
from pipelines.spark.table_io import job_main, read_meta, read_side_file, read_table, table_exists, write_table
from pipelines.spark.validation import Rule, TableRules, assert_valid_output, unit_vector_rule, validate_and_split

log = logging.getLogger("mmfs.encode_items")

DEFAULT_MM_DIM = 64

# What the encoders produce for one distinct content (title, text, image_uri), keyed by its hash.
# The same rows, with the encoder's key, are the encoder cache that incremental runs reuse.
ENCODED_SCHEMA = T.StructType([
    T.StructField("content_hash", T.StringType(), False),
    T.StructField("text_emb", T.ArrayType(T.FloatType(), False), False),
    T.StructField("image_emb", T.ArrayType(T.FloatType(), False), True),
    T.StructField("image_error", T.StringType(), True),
    T.StructField("image_note", T.StringType(), True),
])
CACHE_COLUMNS = ["encoder_key", "content_hash", "text_emb", "image_emb", "image_error", "image_note"]

_WORKER_ENCODERS: dict[EncoderConfig, tuple] = {}


class PhaseTimer:
    """Logs and keeps how long each step of the job took: long work shows where its time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        log.info("%s ...", name)
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        log.info("%s: %.1fs", name, self.seconds[name])


def _worker_encoders(config: EncoderConfig) -> tuple:
    """Load the models once per Python worker and keep them for every later batch."""
    if config not in _WORKER_ENCODERS:
        if config.torch_threads:
            import torch

            torch.set_num_threads(config.torch_threads)
        _WORKER_ENCODERS[config] = (load_text_encoder(config), load_image_encoder(config))
    return _WORKER_ENCODERS[config]


def item_text(title: object, text: object) -> str:
    """What the text encoder reads: title and text joined."""
    parts = [str(p).strip() for p in (title, text) if isinstance(p, str) and p.strip()]
    return ". ".join(parts)


def encode_batch(batch: pd.DataFrame, config: EncoderConfig) -> pd.DataFrame:
    """Encode one batch of items rows. Image failures are per row, never raised."""
    text_encoder, image_encoder = _worker_encoders(config)
    texts = [item_text(t, x) for t, x in zip(batch["title"], batch["text"])]
    text_emb = text_encoder.encode(texts)  # (N, Dt)
    image_emb: list = [None] * len(batch)
    errors: list = [None] * len(batch)
    notes: list = [None] * len(batch)
    if image_encoder is not None:
        pixels, rows = [], []
        for i, uri in enumerate(batch["image_uri"]):
            if not isinstance(uri, str) or not uri:
                continue
            decoded = decode_image(uri, config.image_roots, config.max_image_pixels, config.max_image_bytes)
            errors[i], notes[i] = decoded.error, decoded.note
            if decoded.image is not None:
                pixels.append(image_encoder.preprocess(decoded.image))
                rows.append(i)
        if rows:
            vectors = image_encoder.encode(np.stack(pixels))  # (n, Di)
            for row, vector in zip(rows, vectors):
                image_emb[row] = vector
    return pd.DataFrame({
        "content_hash": batch["content_hash"].to_numpy(),
        "text_emb": list(text_emb),
        "image_emb": image_emb,
        "image_error": errors,
        "image_note": notes,
    })


def encode_partition(batches: Iterator[pd.DataFrame], config: EncoderConfig) -> Iterator[pd.DataFrame]:
    _worker_encoders(config)  # load before the clock starts: the rate below is encoding only
    done, start = 0, time.perf_counter()
    for frame in batches:
        for lo in range(0, len(frame), config.batch_size):
            out = encode_batch(frame.iloc[lo: lo + config.batch_size], config)
            done += len(out)
            yield out
        print(f"[encode_items] worker {os.getpid()}: {done} items, {done / (time.perf_counter() - start):.1f} items/s",
              file=sys.stderr, flush=True)


def content_hash() -> Column:
    """SHA-256 of what the encoders read (title, text, image_uri); nulls and empty strings differ.

    The image is identified by its URI: images are assumed immutable at a URI (a changed picture
    gets a new URI, as object stores and CDNs version them)."""
    parts = [F.coalesce(F.concat(F.lit("s:"), F.col(c)), F.lit("null")) for c in ("title", "text", "image_uri")]
    return F.sha2(F.concat_ws("\x1f", *parts), 256)


def encode(contents: DataFrame, config: EncoderConfig, partitions: int) -> DataFrame:
    """Run the encoders inside Spark on distinct contents; the models load once per worker."""
    source = contents.select("content_hash", "title", "text", "image_uri")
    return source.repartition(partitions, "content_hash").mapInPandas(
        lambda batches: encode_partition(batches, config), schema=ENCODED_SCHEMA
    )


# -- PCA fitted in Spark -----------------------------------------------------------------------

def fit_pca(df: DataFrame, column: str, k: int) -> dict[str, np.ndarray]:
    """Centred PCA of an array column: returns mean (D,) and components (D, k), signs fixed.

    Spark's PCA finds the components of the covariance; we keep the mean so projections are
    centred, and flip each component so its largest-magnitude entry is positive, which makes
    re-runs give the same vectors.
    """
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import array_to_vector
    from pyspark.ml.stat import Summarizer

    vectors = df.select(array_to_vector(F.col(column)).alias("v"))
    dim = len(df.select(column).first()[0])
    k = min(k, dim)
    mean = np.asarray(vectors.select(Summarizer.mean(F.col("v"))).first()[0].toArray(), dtype=np.float64)
    model = PCA(k=k, inputCol="v", outputCol="p").fit(vectors)
    components = np.array(model.pc.toArray(), dtype=np.float64)  # (D, k), a writable copy
    flip = np.sign(components[np.abs(components).argmax(axis=0), np.arange(k)])
    components *= np.where(flip == 0, 1.0, flip)
    return {"mean": mean, "components": components, "explained_variance": np.asarray(model.explainedVariance.toArray())}


def fuse(text_emb: np.ndarray, image_emb: np.ndarray | None, has_image: np.ndarray, pca: dict) -> np.ndarray:
    """(N, Dt), (N, Di) -> (N, mm_dim): unit-norm PCA parts concatenated, then unit-normalised.

    An item without an image gets zeros in the image part, so its mm_emb is its text part.
    """
    def part(x: np.ndarray, name: str) -> np.ndarray:
        projected = (x.astype(np.float64) - pca[f"{name}_mean"]) @ pca[f"{name}_components"]  # (N, k)
        return projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)

    parts = [part(text_emb, "text")]
    if "image_components" in pca:
        image_part = np.zeros((len(text_emb), pca["image_components"].shape[1]))
        if has_image.any():
            image_part[has_image] = part(image_emb[has_image], "image")
        parts.append(image_part)
    fused = np.concatenate(parts, axis=1)
    return (fused / np.maximum(np.linalg.norm(fused, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def pca_artifact(pca: dict) -> tuple[bytes, str]:
    """The PCA as .npz bytes, and a checksum of its arrays (stable across re-saves)."""
    digest = hashlib.sha256()
    for key in sorted(pca):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(pca[key]).tobytes())
    buffer = io.BytesIO()
    np.savez(buffer, **pca)
    return buffer.getvalue(), digest.hexdigest()


def fuse_partition(batches: Iterator[pd.DataFrame], pca: dict) -> Iterator[pd.DataFrame]:
    for frame in batches:
        text = np.stack(frame["text_emb"].to_numpy()) if len(frame) else np.zeros((0, 1))
        has_image = frame["image_emb"].notna().to_numpy()
        image = None
        if has_image.any():
            dim = len(frame["image_emb"][has_image].iloc[0])
            image = np.zeros((len(frame), dim), dtype=np.float32)
            image[has_image] = np.stack(frame["image_emb"][has_image].to_numpy())
        frame = frame.assign(mm_emb=list(fuse(text, image, has_image, pca)) if len(frame) else [])
        yield frame


def with_mm_emb(encoded: DataFrame, pca: dict, encoder_id: str) -> DataFrame:
    schema = T.StructType(encoded.schema.fields + [T.StructField("mm_emb", T.ArrayType(T.FloatType(), False), False)])
    fused = encoded.mapInPandas(lambda batches: fuse_partition(batches, pca), schema=schema)
    return fused.select(
        "item_id",
        "text_emb",
        "image_emb",
        "mm_emb",
        F.col("image_emb").isNotNull().alias("has_image"),
        F.lit(encoder_id).alias("encoder_id"),
        F.col("updated_at").alias("event_timestamp"),
        "created_timestamp",
    ).select(*columns(ITEM_EMBEDDINGS_SCHEMA))


def embedding_rules(text_dim: int, image_dim: int | None, mm_dim: int) -> TableRules:
    rules = [unit_vector_rule("text_emb", text_dim), unit_vector_rule("mm_emb", mm_dim)]
    if image_dim:
        rules.append(unit_vector_rule("image_emb", image_dim, nullable=True))
    rules.append(Rule("has_image_matches", "has_image = (image_emb IS NOT NULL)", "has_image must say whether image_emb is set"))
    return TableRules("item_embeddings", tuple(rules), unique_key=("item_id", "event_timestamp"))


def image_quarantine(encoded: DataFrame) -> DataFrame:
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
    """The image root ingest recorded for the items table, or none (then every image is refused
    unless --image-root names one: a job must not open any file the items name)."""
    try:
        recorded = read_meta(spark, f"{root}/items").get("image_root")
    except Exception:  # noqa: BLE001 - an items table without meta (older ingest): no recorded root
        recorded = None
    return [recorded] if recorded else [NO_IMAGE_ROOT]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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


@job_main
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mmfs").setLevel(logging.INFO)
    args = parse_args(argv)
    spark = spark_from_args(args, "mmfs-encode-items")
    parallelism = spark.sparkContext.defaultParallelism
    local = spark.sparkContext.master.startswith("local")
    config = EncoderConfig(
        text_model=args.text_model,
        image_model=args.image_model,
        clip_weights=args.clip_weights,
        allow_random_weights=args.allow_random_clip_weights,
        text_max_length=args.text_max_length,
        batch_size=args.batch_size,
        device=args.device,
        image_roots=tuple(args.image_root or image_roots_of(spark, args.root)),
        max_image_pixels=args.max_image_pixels,
        # Local mode runs one Python worker per core: one torch thread each avoids oversubscription.
        torch_threads=max(1, (os.cpu_count() or 1) // parallelism) if local else 0,
    )
    staging = f"{args.root}/_staging/encode-{uuid.uuid4().hex[:12]}"
    timer = PhaseTimer()
    phase = timer.phase
    start = time.perf_counter()
    table_path, cache_path = f"{args.root}/{args.table}", f"{args.root}/encoder_cache"
    cache = read_table(spark, cache_path) if table_exists(spark, cache_path) else None
    pca, expected_key = None, None
    if args.incremental:
        if not table_exists(spark, table_path):
            raise SystemExit(f"--incremental needs an earlier run's {table_path}: run encode-items without it first")
        previous = read_meta(spark, table_path)["encoder_identity"]
        expected_key = previous.get("encoder_key")
        if expected_key is None:
            raise SystemExit(f"{table_path} predates the encoder cache: run encode-items once without --incremental")
        with np.load(io.BytesIO(read_side_file(spark, table_path, "_pca.npz"))) as saved:
            pca = {k: saved[k] for k in saved.files}
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

"""The encode job's Spark steps: the encoders run inside Spark (``mapInPandas``, models loaded
once per Python worker: the UDFs of model inference), and the PCA is fitted in Spark and applied
to every partition (``mmfs.core.features.fusion``)."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from mmfs.core.contracts.tables import ENCODER_CACHE
from mmfs.pipelines.encoders import EncoderConfig, load_image_encoder, load_text_encoder
from mmfs.pipelines.images import decode_image
from mmfs.core.features.fusion import fuse
from mmfs.pipelines.spark.schemas import ENCODED_SCHEMA, ITEM_EMBEDDINGS_SCHEMA, columns

log = logging.getLogger("mmfs.encode_items")
CACHE_COLUMNS = ENCODER_CACHE.names  # the encoder cache: ENCODED's rows with the encoder's key


class PhaseTimer:
    """Logs and keeps how long each step of the job took: long work shows where its time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        """Context manager: log and time the block as step ``name``, keeping its seconds in ``self.seconds``."""
        start = time.perf_counter()
        log.info("%s ...", name)
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        log.info("%s: %.1fs", name, self.seconds[name])


_WORKER_ENCODERS: dict[EncoderConfig, tuple] = {}


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


def decode_batch(batch: pd.DataFrame, config: EncoderConfig, image_encoder) -> tuple[list, list, list, list]:
    """Decode and preprocess one batch's images: (pixels, their rows, error per row, note per row). Failures are per row."""
    pixels, rows = [], []
    errors: list = [None] * len(batch)
    notes: list = [None] * len(batch)
    if image_encoder is None:
        return pixels, rows, errors, notes
    for i, uri in enumerate(batch["image_uri"]):
        if not isinstance(uri, str) or not uri:
            continue
        decoded = decode_image(uri, config.image_roots, config.max_image_pixels, config.max_image_bytes)
        errors[i], notes[i] = decoded.error, decoded.note
        if decoded.image is not None:
            pixels.append(image_encoder.preprocess(decoded.image))
            rows.append(i)
    return pixels, rows, errors, notes


def encode_batch(batch: pd.DataFrame, config: EncoderConfig, decoded: tuple | None = None) -> pd.DataFrame:
    """Encode one batch of items rows (``decoded``: its ``decode_batch``, when done ahead). Image failures are per row, never raised."""
    text_encoder, image_encoder = _worker_encoders(config)
    texts = [item_text(t, x) for t, x in zip(batch["title"], batch["text"])]
    text_emb = text_encoder.encode(texts)  # (N, Dt)
    pixels, rows, errors, notes = decoded if decoded is not None else decode_batch(batch, config, image_encoder)
    image_emb: list = [None] * len(batch)
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
    """``mapInPandas`` body: encode one partition's rows in ``config.batch_size`` batches (``ENCODED`` columns),
    logging the worker's rate to stderr. The next batch's images are decoded on a thread while the
    current batch runs through the encoders (decoding releases the GIL)."""
    _, image_encoder = _worker_encoders(config)  # load before the clock starts: the rate below is encoding only
    done, start = 0, time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmfs-decode") as pool:
        for frame in batches:
            # Texts of like length batched together: a batch pads to its longest text, so sorting the
            # Arrow batch by length cuts the padded tokens (rows are keyed by content_hash; order is free).
            lengths = np.array([len(item_text(t, x)) for t, x in zip(frame["title"], frame["text"])], dtype=np.int64)
            frame = frame.iloc[np.argsort(lengths, kind="stable")]
            chunks = [frame.iloc[lo: lo + config.batch_size] for lo in range(0, len(frame), config.batch_size)]
            ahead = pool.submit(decode_batch, chunks[0], config, image_encoder) if chunks else None
            for i, chunk in enumerate(chunks):
                decoded = ahead.result()
                ahead = pool.submit(decode_batch, chunks[i + 1], config, image_encoder) if i + 1 < len(chunks) else None
                out = encode_batch(chunk, config, decoded)
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


def _moments_partition(batches: Iterator[pa.RecordBatch], column: str) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: one partition's row count, column sum (D,) and Gram matrix X^T X (D, D), float64."""
    n, total, gram = 0, None, None
    for batch in batches:
        values = batch.column(column)
        if len(values) == 0:
            continue
        x = values.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(values), -1)  # (N, D)
        if gram is None:
            total, gram = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        n += len(x)
        total += x.sum(axis=0)
        gram += x.T @ x
    if gram is not None:
        yield pa.RecordBatch.from_pydict({"n": [n], "dim": [len(total)], "sum": [total.tobytes()], "gram": [gram.tobytes()]})


def fit_pca(df: DataFrame, column: str, k: int) -> dict[str, np.ndarray]:
    """Centred PCA of an array column: returns mean (D,) and components (D, k), signs fixed.

    One pass over the rows: each partition sums its rows and their outer products (D x D), the
    driver adds them up and takes the top-k eigenvectors of the covariance (what Spark ML's PCA
    computes, without its several jobs). We keep the mean so projections are centred, and flip
    each component so its largest-magnitude entry is positive, which makes re-runs give the same
    vectors. ``explained_variance`` is each component's share of the total variance, as Spark's.
    """
    schema = T.StructType([T.StructField("n", T.LongType()), T.StructField("dim", T.LongType()),
                           T.StructField("sum", T.BinaryType()), T.StructField("gram", T.BinaryType())])
    parts = df.select(column).mapInArrow(lambda batches: _moments_partition(batches, column), schema=schema).collect()
    if not parts:
        raise ValueError(f"cannot fit a PCA of {column} on no rows")
    dim = int(parts[0]["dim"])
    n = sum(int(r["n"]) for r in parts)
    total = sum(np.frombuffer(r["sum"], np.float64) for r in parts)
    gram = sum(np.frombuffer(r["gram"], np.float64).reshape(dim, dim) for r in parts)
    mean = total / n
    cov = (gram - n * np.outer(mean, mean)) / max(n - 1, 1)  # (D, D)
    k = min(k, dim)
    eigenvalues, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(eigenvalues)[::-1][:k]
    components = np.ascontiguousarray(vectors[:, order])  # (D, k)
    flip = np.sign(components[np.abs(components).argmax(axis=0), np.arange(k)])
    components *= np.where(flip == 0, 1.0, flip)
    variance = np.clip(eigenvalues, 0.0, None)
    explained = variance[order] / variance.sum() if variance.sum() > 0 else np.zeros(k)
    return {"mean": mean, "components": components, "explained_variance": explained}


def fuse_partition(batches: Iterator[pd.DataFrame], pca: dict) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` body: add ``mm_emb`` (the fused PCA projection of text_emb and image_emb) to each batch."""
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
    """Encoded items -> ``item_embeddings`` rows: fused ``mm_emb``, ``has_image``, ``encoder_id``, and
    ``event_timestamp`` taken from updated_at."""
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

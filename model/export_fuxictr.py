"""Export an mmfs training set as FuxiCTR LongCTR data, row for row, so that FuxiCTR's own models
train on exactly the rows mmfs's models train on (``make bench-models``).

FuxiCTR's ``LongCTRDataLoader`` reads three parquet files per data set:

- ``<split>.parquet``: int64 columns only, one row per training row: ``user_index`` (a row of
  ``user_info``), ``seq_len`` (how many of its items are the history), ``item_index`` (the
  target's row of ``item_info``), ``label``, the bucketed dense features and ``user_id`` (the
  group id of GAUC);
- ``user_info.parquet``: ``full_item_seq`` per user row. Here every training row is its own user
  row holding its own history (``hist_item_ids``, oldest first, at most ``max_len``), so the
  sequence is exactly the point-in-time one mmfs's loader gives, ties and all;
- ``item_info.parquet``: per ``item_index`` (row 0 is padding) the item's features: ``item_id``,
  the row of mmfs's id vocabulary (1 = unseen in train), and ``mm_emb``, the fused embedding.
  An item index is one *version* of one item's embedding (or "no embedding yet"), and each row
  and each history position points at the version valid at the row's time, the loader's own
  point-in-time lookup (``mmfs.core.features.item_index``).

FuxiCTR's loader stacks the columns into one int64 array, so the dense item and user stats
(``mmfs.model.data.dense_block``) enter as bucketed categoricals: log1p(count) in quarter steps and
the smoothed CTR in 1/50 steps, bucket 0 meaning "unknown".

``check_export`` re-reads the export and compares it with the training set: row count, labels,
every row's history and target, and the target's vector, and raises on any difference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmfs.model.data import LoaderConfig, TrainingSetDataset, load_embedding_index, read_manifest
from mmfs.model.vocab import IdVocab
from mmfs.core.features.item_index import MISSING

SPLITS = ("train", "valid", "test")
COUNT_BUCKETS = 64  # log1p(count) * 4, capped; 0 = unknown
CTR_BUCKETS = 51  # ctr * 50; 0 = unknown
DENSE_FEATURES = tuple(f"{prefix}_{name}" for prefix in ("item", "user") for name in ("impressions", "clicks", "ctr"))


class ExportMismatch(AssertionError):
    """The export does not hold the training set's rows."""


@dataclass(frozen=True)
class Export:
    """Where an export was written, rows per split, item_info rows, vocabulary size and mm_emb dim."""

    root: Path
    rows: dict[str, int]
    n_items: int  # item_info rows (versions + no-embedding rows + padding)
    vocab_size: int
    mm_dim: int


def _bucket_dense(dense: np.ndarray, known: np.ndarray) -> list[np.ndarray]:
    """(B, 4) dense block (log1p impressions, log1p clicks, ctr, logit ctr) -> three int64 bucket columns."""
    counts = [np.where(known, np.minimum(np.floor(dense[:, i] * 4).astype(np.int64) + 1, COUNT_BUCKETS - 1), 0) for i in (0, 1)]
    ctr = np.where(known, np.minimum(np.floor(dense[:, 2] * 50).astype(np.int64) + 1, CTR_BUCKETS - 1), 0)
    return counts + [ctr]


def _rows(training_set: Path, split: str, max_len: int) -> dict[str, np.ndarray]:
    """One split through mmfs's own loader (same padding, masks and dense block), in file order."""
    data = TrainingSetDataset(training_set, LoaderConfig(split=split, batch_size=65_536, max_len=max_len, vectors=(), shuffle=False))
    batches = list(data)
    keys = ("user_id", "item_id", "label", "event_us", "hist_item_ids", "hist_mask", "dense", "dense_mask", "user_dense", "user_dense_mask")
    if not batches:
        return {k: np.zeros((0,) if k not in ("hist_item_ids", "hist_mask", "dense", "user_dense") else (0, 0)) for k in keys}
    return {k: np.concatenate([b[k].numpy() for b in batches]) for k in keys}


def _all_items(splits: dict[str, dict]) -> np.ndarray:
    """Every target and history item id of every split, sorted."""
    return np.unique(np.concatenate([np.concatenate([s["item_id"], s["hist_item_ids"][s["hist_mask"]]]) for s in splits.values()]))


def export(training_set: str | Path, out: str | Path, vector: str = "mm_emb", max_len: int = 50) -> Export:
    """Write ``out/{train,valid,test}.parquet``, ``user_info.parquet``, ``item_info.parquet`` and
    ``feature_map.json`` (FuxiCTR's, for the features written)."""
    training_set, out = Path(training_set), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(training_set)
    vocab = IdVocab.from_training_set(training_set)
    index = load_embedding_index(manifest["embedding_table"], vector) if manifest.get("embedding_table") else None
    splits = {split: _rows(training_set, split, max_len) for split in SPLITS}
    all_ids = _all_items(splits)
    n_versions = len(index.item_ids) if index is not None else 0
    # item_info: 0 padding; 1..V the embedding versions; V+1.. one "no embedding yet" row per item.
    no_emb_base = 1 + n_versions

    def item_index(ids: np.ndarray, as_of: np.ndarray) -> np.ndarray:
        version = index.lookup(ids, as_of) if index is not None else np.full(ids.shape, MISSING)
        return np.where(version != MISSING, version + 1, no_emb_base + np.searchsorted(all_ids, ids))

    dim = index.dim if index is not None else 0
    info_item_ids = np.concatenate([[0], index.item_ids if index is not None else [], all_ids]).astype(np.int64)
    info_vectors = np.concatenate([np.zeros((1, dim), np.float32), index.vectors if index is not None else np.zeros((0, dim), np.float32),
                                   np.zeros((len(all_ids), dim), np.float32)])
    vocab_rows = vocab.index(torch.from_numpy(info_item_ids)).numpy()
    vocab_rows[0] = 0  # padding
    item_info = pa.table({"item_index": pa.array(np.arange(len(info_item_ids)), pa.int64()),
                          "item_id": pa.array(vocab_rows, pa.int64()),
                          vector: pa.array(list(info_vectors), pa.list_(pa.float32()))})
    pq.write_table(item_info, out / "item_info.parquet")

    sequences, offset, rows = [], 0, {}
    for split, s in splits.items():
        n = len(s["label"])
        hist_index = item_index(s["hist_item_ids"].ravel(), np.repeat(s["event_us"], s["hist_item_ids"].shape[1])).reshape(s["hist_item_ids"].shape)
        lengths = s["hist_mask"].sum(axis=1)
        for r in range(n):  # the loader right-pads: real positions come first, oldest first
            sequences.append(hist_index[r, :lengths[r]].astype(np.int64))
        columns = {"user_index": np.arange(offset, offset + n), "seq_len": lengths.astype(np.int64),
                   "item_index": item_index(s["item_id"], s["event_us"]).astype(np.int64), "user_id": s["user_id"].astype(np.int64)}
        buckets = _bucket_dense(s["dense"], s["dense_mask"]) + _bucket_dense(s["user_dense"], s["user_dense_mask"])
        columns.update({name: b.astype(np.int64) for name, b in zip(DENSE_FEATURES, buckets)})
        columns["label"] = s["label"].astype(np.int64)
        pq.write_table(pa.table({k: pa.array(v, pa.int64()) for k, v in columns.items()}), out / f"{split}.parquet")
        rows[split] = n
        offset += n
    pq.write_table(pa.table({"full_item_seq": pa.array(sequences, pa.list_(pa.int64()))}), out / "user_info.parquet")
    result = Export(out, rows, len(info_item_ids), len(vocab), dim)
    write_feature_map(result, with_vector=False, path=out / "feature_map.json")
    write_feature_map(result, with_vector=True, path=out / f"feature_map_{vector}.json", vector=vector)
    (out / "export.json").write_text(json.dumps({"training_set": str(training_set), "rows": rows, "n_items": result.n_items,
                                                  "vocab_size": result.vocab_size, "mm_dim": dim, "vector": vector}, indent=2))
    return result


def write_feature_map(export_: Export, with_vector: bool, path: Path, vector: str = "mm_emb", embedding_dim: int = 32) -> Path:
    """FuxiCTR's feature_map.json: meta columns, the bucketed dense features, the item features."""
    features = [{"user_index": {"type": "meta"}}, {"seq_len": {"type": "meta"}}, {"item_index": {"type": "meta"}},
                {"user_id": {"type": "meta"}}]
    for name in DENSE_FEATURES:
        features.append({name: {"type": "categorical", "source": "", "vocab_size": CTR_BUCKETS if name.endswith("ctr") else COUNT_BUCKETS}})
    features.append({"item_id": {"type": "categorical", "source": "item", "vocab_size": export_.vocab_size, "padding_idx": 0}})
    if with_vector and export_.mm_dim:
        features.append({vector: {"type": "embedding", "source": "item", "pretrain_dim": export_.mm_dim, "embedding_dim": embedding_dim}})
    feature_map = {"dataset_id": export_.root.name, "num_fields": len(features) - 4, "total_features": 0, "input_length": 0,
                   "labels": ["label"], "features": features}
    path.write_text(json.dumps(feature_map, indent=2))
    return path


def check_export(training_set: str | Path, export_: Export, vector: str = "mm_emb", max_len: int = 50) -> dict:
    """Compare the export with the training set, every row: counts, labels, user ids, the history
    (as item ids, via item_info), the target, and the target's vector against mmfs's loader."""
    training_set = Path(training_set)
    item_info = pq.read_table(export_.root / "item_info.parquet")
    user_info = pq.read_table(export_.root / "user_info.parquet").column("full_item_seq").to_pylist()
    manifest = read_manifest(training_set)
    index = load_embedding_index(manifest["embedding_table"], vector) if manifest.get("embedding_table") else None
    splits = {split: _rows(training_set, split, max_len) for split in SPLITS}
    # item_index -> raw item id, rebuilt from the layout (versions, then one row per item)
    raw = np.concatenate([[0], index.item_ids if index is not None else [], _all_items(splits)]).astype(np.int64)
    vectors = np.stack(item_info.column(vector).to_numpy(zero_copy_only=False)) if export_.mm_dim else None
    checked = {}
    for split, s in splits.items():
        e = pq.read_table(export_.root / f"{split}.parquet").to_pydict()
        n = len(s["label"])
        if len(e["label"]) != n or n != export_.rows[split]:
            raise ExportMismatch(f"{split}: {len(e['label'])} exported rows for {n} training rows")
        if not np.array_equal(np.asarray(e["label"]), s["label"].astype(np.int64)):
            raise ExportMismatch(f"{split}: labels differ")
        if not np.array_equal(np.asarray(e["user_id"]), s["user_id"]):
            raise ExportMismatch(f"{split}: user ids differ")
        target = raw[np.asarray(e["item_index"])]
        if not np.array_equal(target, s["item_id"]):
            raise ExportMismatch(f"{split}: target items differ at rows {np.flatnonzero(target != s['item_id'])[:5].tolist()}")
        for r in range(n):
            seq = user_info[e["user_index"][r]][:e["seq_len"][r]]
            expected = s["hist_item_ids"][r][s["hist_mask"][r]]
            if not np.array_equal(raw[np.asarray(seq, np.int64)], expected):
                raise ExportMismatch(f"{split} row {r}: history {raw[np.asarray(seq, np.int64)].tolist()} != {expected.tolist()}")
        if vectors is not None:
            got = vectors[np.asarray(e["item_index"])]
            want, _ = index.vectors_at(s["item_id"], s["event_us"])
            if not np.allclose(got, want, atol=1e-7):
                raise ExportMismatch(f"{split}: target {vector} differs from the loader's point-in-time vector")
        checked[split] = n
    return checked

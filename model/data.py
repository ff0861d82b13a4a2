"""Stream a training set (``mmfs training-set`` output) as batches of tensors.

``TrainingSetDataset`` is a torch ``IterableDataset`` over the parquet row groups of one split: it
never loads the split into memory, only one row group at a time. Row groups are shared out among
DataLoader workers and distributed ranks, and shuffled per epoch with a seed.

Embedding vectors that the training set holds by reference (``--embeddings reference``, the
default) are looked up here point-in-time, for the target and every history item, in the
encoder's versioned embedding table: the version with ``event_timestamp <= T`` and
``created_timestamp <= T`` for the row's time T (``pipelines.features.item_index``, the same lookup the
similarity job uses).

A batch is a dict of tensors; B rows, L = max_len history positions (oldest first, right-padded):

    user_id, item_id        (B,) int64        label            (B,) float32
    event_us                (B,) int64        epoch microseconds of the row
    hist_item_ids           (B, L) int64      0 at padding
    hist_mask               (B, L) bool       true at real history positions
    hist_sim                (B, L) float32    0 where unknown; hist_sim_mask (B, L) marks known values
    dense                   (B, 4) float32    item stats: log1p(impressions), log1p(clicks), ctr, logit(ctr) (0 when unknown)
    dense_mask              (B,) bool         item stats known at T
    user_dense              (B, 4) float32    user stats, the same transform (zeros without a user_stats view)
    user_dense_mask         (B,) bool         user stats known at T
    <vec>, <vec>_found      (B, D) float32, (B,) bool        target's vector (e.g. mm_emb)
    hist_<vec>              (B, L, D) float32 history vectors, zero where not found or padded
    hist_<vec>_version      (B, L) int64      which version of the vector (a row of the embedding
                                              index), -1 where not found or padded: equal versions
                                              hold equal vectors (models may compute per version)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from model.batch import ITEM_STATS_COLUMNS, USER_STATS_COLUMNS, similarity_fields, stats_fields, to_tensors, vector_fields
from pipelines.features.item_index import MISSING, ItemEmbeddingIndex, to_micros


@dataclass(frozen=True)
class LoaderConfig:
    """Which split to stream, batch size, history length L, the vectors looked up, shuffling and sharding."""

    split: str = "train"
    batch_size: int = 1024
    max_len: int = 50
    vectors: tuple[str, ...] = ("mm_emb",)  # looked up point-in-time for target and history
    shuffle: bool = True
    seed: int = 0
    rank: int = 0
    world_size: int = 1


def pad_lists(column: pa.Array, width: int, dtype, fill=0) -> tuple[np.ndarray, np.ndarray]:
    """A list column -> (B, width) array keeping each list's last ``width`` items, and its mask.

    Null lists are empty; null elements become ``fill`` and are false in the second mask returned
    by the caller's own null check (see ``pad_nullable``).
    """
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(column)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)  # (B,)
    column = pc.fill_null(column, pa.scalar([], column.type)) if column.null_count else column
    offsets = column.offsets.to_numpy()[:-1] - column.offsets[0].as_py()  # (B,)
    flat = column.flatten()
    values = pc.fill_null(flat, fill).to_numpy(zero_copy_only=False).astype(dtype)  # (sum,)
    valid = ~np.asarray(flat.is_null().to_numpy(zero_copy_only=False), dtype=bool) if flat.null_count else np.ones(len(flat), bool)
    keep = np.minimum(lengths, width)  # (B,)
    skip = lengths - keep  # drop the oldest beyond width
    row = np.repeat(np.arange(n), keep)
    pos = np.arange(keep.sum()) - np.repeat(np.cumsum(keep) - keep, keep)
    src = np.repeat(offsets + skip, keep) + pos
    out = np.full((n, width), fill, dtype=dtype)
    mask = np.zeros((n, width), dtype=bool)
    out[row, pos] = values[src]
    mask[row, pos] = valid[src]
    return out, mask


def read_manifest(training_set: str | Path) -> dict:
    """A training set's ``manifest.json``, parsed."""
    return json.loads((Path(training_set) / "manifest.json").read_text())


def load_embedding_index(table_dir: str | Path, column: str) -> ItemEmbeddingIndex:
    """All versions of one vector column of the embedding table (items x D, small)."""
    files = sorted(Path(table_dir).glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f, columns=["item_id", "event_timestamp", "created_timestamp", column]) for f in files])
    return ItemEmbeddingIndex.from_arrow(table, column, str(table_dir))


def stats_columns(table: pa.Table, names: tuple[str, str, str]) -> dict[str, np.ndarray]:
    """(impressions, clicks, ctr) columns of a training-set table -> ``stats_fields``; all unknown
    when the table lacks them (a service without that stats view)."""
    if names[0] not in table.column_names:
        return stats_fields(names, *(np.zeros(table.num_rows) for _ in range(3)), np.zeros(table.num_rows, bool))
    known = table.column(names[0]).is_valid().to_numpy(zero_copy_only=False)
    impressions, clicks = (pc.fill_null(table.column(c), 0).to_numpy() for c in names[:2])
    return stats_fields(names, impressions, clicks, pc.fill_null(table.column(names[2]), 0.0).to_numpy(), known)


class TrainingSetDataset(IterableDataset):
    """Batches of tensors from one split of a training set, one parquet row group at a time."""

    def __init__(self, training_set: str | Path, config: LoaderConfig = LoaderConfig()):
        super().__init__()
        self.root = Path(training_set)
        self.config = config
        self.manifest = read_manifest(self.root)
        self.files = sorted((self.root / f"split={config.split}").glob("*.parquet"))
        self.row_groups = [(f, g) for f in self.files for g in range(pq.ParquetFile(f).num_row_groups)]
        self.rows = self.manifest["splits"][config.split]["rows"]
        by_reference = {ref.split(":", 1)[1] for ref in self.manifest.get("vector_fields_by_reference", [])}
        self.indexes: dict[str, ItemEmbeddingIndex] = {}
        for vector in config.vectors:
            if not self.manifest.get("embedding_table"):
                raise ValueError(f"{self.root}: the training set's service has no embedding table for {vector}")
            if vector not in by_reference and not any(f.endswith(f":{vector}") for f in self.manifest["features"]):
                raise ValueError(f"{vector} is not a feature of {self.manifest['feature_service']}")
            self.indexes[vector] = load_embedding_index(self.manifest["embedding_table"], vector)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the row-group and row shuffle."""
        self.epoch = epoch

    def __len__(self) -> int:  # batches per epoch over all workers/ranks (approximate at shard edges)
        return -(-self.rows // (self.config.batch_size * self.config.world_size))

    def _my_row_groups(self) -> list[tuple[Path, int]]:
        groups = list(self.row_groups)
        if self.config.shuffle:
            np.random.default_rng(self.config.seed + self.epoch).shuffle(groups)
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        shards = self.config.world_size * workers
        return groups[self.config.rank * workers + worker::shards]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(self.config.seed + 7919 * self.epoch)
        for path, group in self._my_row_groups():
            table = pq.ParquetFile(path).read_row_group(group)
            order = rng.permutation(table.num_rows) if self.config.shuffle else np.arange(table.num_rows)
            for lo in range(0, table.num_rows, self.config.batch_size):
                yield self.collate(table.take(order[lo:lo + self.config.batch_size]))

    def collate(self, table: pa.Table) -> dict[str, torch.Tensor]:
        """Rows of the split -> a batch of tensors (module docstring's layout), vectors looked up at each row's time."""
        L = self.config.max_len
        batch: dict[str, np.ndarray] = {
            "user_id": table.column("user_id").to_numpy(),
            "item_id": table.column("item_id").to_numpy(),
            "label": table.column("label").to_numpy().astype(np.float32),
            "event_us": to_micros(table.column("event_timestamp")),
        }
        hist_ids, hist_mask = pad_lists(table.column("hist_item_ids"), L, np.int64)  # (B, L)
        batch["hist_item_ids"], batch["hist_mask"] = hist_ids, hist_mask
        if "hist_sim" in table.column_names:
            sims, sim_known = pad_lists(table.column("hist_sim"), L, np.float32)  # (B, L)
            batch.update(similarity_fields(sims, sim_known & hist_mask))
        for names in (ITEM_STATS_COLUMNS, USER_STATS_COLUMNS):
            batch.update(stats_columns(table, names))
        for vector, index in self.indexes.items():
            as_of = batch["event_us"]
            target, found = index.vectors_at(batch["item_id"], as_of)  # (B, D), (B,)
            versions = index.lookup(hist_ids.ravel(), np.repeat(as_of, L)).reshape(hist_ids.shape)  # (B, L)
            hist_found = (versions != MISSING) & hist_mask  # (B, L)
            versions = np.where(hist_found, versions, MISSING)
            hist = np.zeros((*hist_ids.shape, index.dim), np.float32)  # (B, L, D)
            hist[hist_found] = index.vectors[versions[hist_found]]
            batch.update(vector_fields(vector, target, found, hist, hist_found))
            batch[f"hist_{vector}_version"] = versions
        return to_tensors(batch)

"""Stream a training set (``mmfs training-set`` output) as batches of tensors.

``TrainingSetDataset`` is a torch ``IterableDataset`` over the parquet row groups of one split: it
never loads the split into memory, only one row group at a time. Row groups are shared out among
DataLoader workers and distributed ranks, and shuffled per epoch with a seed.

Histories that the training set holds by reference (``--history reference``, the default) are
looked up here by the row's snapshot key (``SnapshotIndex``: the user_sequence row the
point-in-time join picked), and the request-time features (``hist_sim``, and the target's
embedding status) are computed here at the row's time with the function the scorer calls,
``mmfs.core.features.similarity.target_similarity``.

Embedding vectors that the training set holds by reference (``--embeddings reference``, the
default) are looked up here point-in-time, for the target and every history item, in the
encoder's versioned embedding table: the version with ``event_timestamp <= T`` and
``created_timestamp <= T`` for the row's time T (``mmfs.core.features.item_index``, the same lookup the
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

import glob
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

from mmfs.model.batch import ITEM_STATS_COLUMNS, USER_STATS_COLUMNS, similarity_fields, stats_fields, to_tensors, vector_fields
from mmfs.core.files import Files, LocalFiles, read_parquet
from mmfs.core.features.item_index import MISSING, ItemEmbeddingIndex, KeyRanges, to_micros
from mmfs.core.features.fusion import part_slices
from mmfs.core.features.similarity import target_similarity


@dataclass(frozen=True)
class LoaderConfig:
    """Which split to stream, batch size, history length L, the vectors looked up, shuffling and sharding."""

    split: str = "train"
    batch_size: int = 1024
    max_len: int = 50
    vectors: tuple[str, ...] = ("mm_emb",)  # looked up point-in-time for target and history
    similarity: str = "fused"  # s_j over all of mm_emb, or (ablations) over its "text" or "image" part only
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


class SnapshotIndex:
    """One list field of a view's rows, by (entity key, event time): the history a training row
    names by its key column. Rows are sorted by (key, time) and the lists kept flat (offsets +
    values); a lookup finds the key's rows (a gather when keys are small integers, else a binary
    search) and the time among them (a binary search over those few rows), then one gather."""

    def __init__(self, keys: np.ndarray, event_us: np.ndarray, lists: pa.ListArray, source: str = ""):
        order = np.lexsort((event_us, keys))
        self.source = source
        self.keys, self.times = np.asarray(keys, np.int64)[order], np.asarray(event_us, np.int64)[order]  # (R,)
        lists = pc.take(lists, pa.array(order))
        lists = pc.fill_null(lists, pa.scalar([], lists.type)) if lists.null_count else lists
        self.values = pc.fill_null(lists.flatten(), 0).to_numpy(zero_copy_only=False)  # (sum len,)
        offsets = lists.offsets.to_numpy()
        self.starts, self.lengths = offsets[:-1] - offsets[0], np.diff(offsets)  # (R,), (R,)
        self.ranges = KeyRanges(self.keys)  # each key's rows

    @classmethod
    def from_parquet(cls, pattern: str, key: str, timestamp: str, field: str) -> "SnapshotIndex":
        """Read ``key``, ``timestamp`` and the list ``field`` of the parquet files matching ``pattern``."""
        files = sorted(glob.glob(pattern))
        if not files:
            raise FileNotFoundError(f"no parquet files match {pattern}: the table a training set refers to is gone")
        table = pa.concat_tables([pq.read_table(f, columns=[key, timestamp, field]) for f in files])
        return cls(table.column(key).to_numpy(), to_micros(table.column(timestamp)),
                   table.column(field).combine_chunks(), pattern)

    def rows(self, keys: np.ndarray, event_us: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Row of each (key, time) where ``known``, else -1. A known key that is not in the table
        means the table changed under the training set: an error naming the row."""
        keys = np.asarray(keys, np.int64)
        event_us = np.asarray(event_us, np.int64)
        out = np.full(len(keys), -1, np.int64)
        if not known.any():
            return out
        k, t = keys[known], event_us[known]
        lo, end = self.ranges.of(k)
        hi = end.copy()
        while True:  # binary search for t within each key's rows (a user has few snapshots)
            open_ = lo < hi
            if not open_.any():
                break
            mid = (lo + hi) // 2
            before = self.times[np.minimum(mid, len(self.times) - 1)] < t
            lo = np.where(open_ & before, mid + 1, lo)
            hi = np.where(open_ & ~before, mid, hi)
        ok = (lo < end) & (self.times[np.minimum(lo, max(len(self.times) - 1, 0))] == t) if len(self.times) else np.zeros(len(k), bool)
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise KeyError(f"{self.source}: no row for key {int(k[bad])} at {int(t[bad])} us, which a training row names: "
                           "the table changed after the training set was built; rebuild it (mmfs training-set)")
        out[known] = lo
        return out

    def padded(self, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, width) values keeping each list's last ``width`` items (padding 0), and the mask; row -1 is empty."""
        found = rows >= 0
        lengths = np.where(found, self.lengths[np.maximum(rows, 0)], 0)  # (B,)
        keep = np.minimum(lengths, width)
        start = self.starts[np.maximum(rows, 0)] + lengths - keep  # (B,) drop the oldest beyond width
        mask = np.arange(width)[None, :] < keep[:, None]  # (B, width)
        out = np.zeros((len(rows), width), self.values.dtype if len(self.values) else np.int64)
        r, c = np.nonzero(mask)
        out[r, c] = self.values[start[r] + c]
        return out, mask


def read_manifest(training_set: str | Path) -> dict:
    """A training set's ``manifest.json``, parsed."""
    return json.loads((Path(training_set) / "manifest.json").read_text())


def open_history(manifest: dict) -> tuple[SnapshotIndex | None, str | None]:
    """The snapshot index of a training set's histories by reference, and the rows' key column (None, None when inline)."""
    views = {v["name"]: v for v in manifest.get("views", [])}
    for view, ref in manifest.get("list_fields_by_reference", {}).items():
        if "hist_item_ids" in ref["fields"]:
            spec = views[view]
            return SnapshotIndex.from_parquet(spec["glob"], spec["join_keys"][0], spec["timestamp"], "hist_item_ids"), ref["key"]
    return None, None


def snapshot_rows(index: SnapshotIndex, table: pa.Table, key_column: str) -> np.ndarray:
    """Each training row's snapshot row in ``index`` (-1 where the row names none)."""
    key = table.column(key_column)
    known = key.is_valid().to_numpy(zero_copy_only=False)
    stamps = pc.fill_null(pc.cast(pc.cast(key, pa.timestamp("us", tz="UTC")), pa.int64()), 0).to_numpy()
    return index.rows(table.column("user_id").to_numpy(), stamps, known)


def load_embedding_index(table_dir: str | Path, column: str, files: Files | None = None) -> ItemEmbeddingIndex:
    """All versions of one vector column of the embedding table (items x D, small). ``files``: the
    table's file system (``mmfs.core.files``; default the local disk)."""
    files = files or LocalFiles()
    paths = [e.path for e in files.list(str(table_dir)) if e.name.endswith(".parquet") and e.name[:1] not in "._"]
    table = read_parquet(files, paths, columns=["item_id", "event_timestamp", "created_timestamp", column])
    return ItemEmbeddingIndex.from_arrow(table, column, str(table_dir))


def stats_columns(table: pa.Table, names: tuple[str, str, str]) -> dict[str, np.ndarray]:
    """(impressions, clicks, ctr) columns of a training-set table -> ``stats_fields``; all unknown
    when the table lacks them (a service without that stats view)."""
    if names[0] not in table.column_names:
        return stats_fields(names, *(np.zeros(table.num_rows) for _ in range(3)), np.zeros(table.num_rows, bool))
    known = table.column(names[0]).is_valid().to_numpy(zero_copy_only=False)
    impressions, clicks = (pc.fill_null(table.column(c), 0).to_numpy() for c in names[:2])
    return stats_fields(names, impressions, clicks, pc.fill_null(table.column(names[2]), 0.0).to_numpy(), known)


def vectors_as_of(index: ItemEmbeddingIndex, item_ids: np.ndarray, hist_ids: np.ndarray, hist_mask: np.ndarray, as_of: np.ndarray):
    """Target and history vectors at each row's time: target (B, D), found (B,), history
    (B, L, D), its found mask (B, L) and versions (B, L), -1 where not found or padded. Only real
    history positions are looked up (padding is most of (B, L) in short histories)."""
    target, found = index.vectors_at(item_ids, as_of)  # (B, D), (B,)
    real = np.flatnonzero(hist_mask.ravel())  # (N,) positions holding an item
    versions = np.full(hist_ids.shape, MISSING, np.int64)  # (B, L)
    versions.ravel()[real] = index.lookup(hist_ids.ravel()[real], as_of[real // hist_ids.shape[1]])
    hist_found = versions != MISSING  # (B, L)
    hist = np.zeros((*hist_ids.shape, index.dim), np.float32)  # (B, L, D)
    hist[hist_found] = index.vectors[versions[hist_found]]
    return target, found, hist, hist_found, versions


def similarities(target: np.ndarray, found: np.ndarray, hist: np.ndarray, hist_found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s_j (B, L) and where it is known (both vectors known at T), by the scorer's function, computed
    on the known positions only."""
    known = hist_found & found[:, None]  # (B, L)
    rows, cols = np.nonzero(known)  # (N,)
    sims = np.zeros(known.shape, np.float32)
    if len(rows):
        sims[rows, cols] = target_similarity(target[rows], hist[rows, cols][:, None, :], np.ones((len(rows), 1), bool))[:, 0]
    return sims, known


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
        self.history, self.history_key = open_history(self.manifest)
        self.similarity_index = None  # hist_sim computed here at the row's time (request-time feature)
        if any(f.endswith(":hist_sim") for f in self.manifest.get("request_time_fields", [])):
            self.similarity_index = self.indexes.get("mm_emb")
            if self.similarity_index is None:
                self.similarity_index = load_embedding_index(self.manifest["embedding_table"], "mm_emb")
        self.similarity_part = slice(None)  # which columns of mm_emb s_j compares
        if config.similarity not in ("fused", "none"):
            parts = part_slices(dict(np.load(Path(self.manifest["embedding_table"]) / "_pca.npz")))
            if config.similarity not in parts:
                raise ValueError(f"similarity {config.similarity!r}: mm_emb has no such part (it has {sorted(parts)})")
            self.similarity_part = parts[config.similarity]
            self.similarity_index = self.indexes.get("mm_emb") or load_embedding_index(self.manifest["embedding_table"], "mm_emb")
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

    def histories(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """(B, L) history ids and mask: from the rows' lists (inline) or by their snapshot key (reference)."""
        L = self.config.max_len
        if "hist_item_ids" in table.column_names:
            return pad_lists(table.column("hist_item_ids"), L, np.int64)
        if self.history is None:  # a service without a sequence view
            return np.zeros((table.num_rows, L), np.int64), np.zeros((table.num_rows, L), bool)
        return self.history.padded(snapshot_rows(self.history, table, self.history_key), L)

    def collate(self, table: pa.Table) -> dict[str, torch.Tensor]:
        """Rows of the split -> a batch of tensors (module docstring's layout), vectors looked up at each row's time."""
        L = self.config.max_len
        batch: dict[str, np.ndarray] = {
            "user_id": table.column("user_id").to_numpy(),
            "item_id": table.column("item_id").to_numpy(),
            "label": table.column("label").to_numpy().astype(np.float32),
            "event_us": to_micros(table.column("event_timestamp")),
        }
        hist_ids, hist_mask = self.histories(table)  # (B, L)
        batch["hist_item_ids"], batch["hist_mask"] = hist_ids, hist_mask
        own_similarity = self.similarity_part != slice(None)  # an ablation's part-similarity replaces the table's
        if "hist_sim" in table.column_names and not own_similarity:
            sims, sim_known = pad_lists(table.column("hist_sim"), L, np.float32)  # (B, L)
            batch.update(similarity_fields(sims, sim_known & hist_mask))
        for names in (ITEM_STATS_COLUMNS, USER_STATS_COLUMNS):
            batch.update(stats_columns(table, names))
        looked_up = {}
        for vector, index in self.indexes.items():
            target, found, hist, hist_found, versions = looked_up[vector] = vectors_as_of(index, batch["item_id"], hist_ids, hist_mask, batch["event_us"])
            batch.update(vector_fields(vector, target, found, hist, hist_found))
            batch[f"hist_{vector}_version"] = versions
        if self.similarity_index is not None and ("hist_sim" not in table.column_names or own_similarity):
            target, found, hist, hist_found, _ = looked_up.get("mm_emb") or vectors_as_of(
                self.similarity_index, batch["item_id"], hist_ids, hist_mask, batch["event_us"])
            part = self.similarity_part
            batch.update(similarity_fields(*similarities(target[:, part], found, hist[..., part], hist_found)))
        return to_tensors(batch)

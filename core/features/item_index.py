"""Point-in-time lookup of versioned item embeddings, in numpy.

For (item_id, T) it returns the version with the greatest (event_timestamp, created_timestamp)
among those with event_timestamp <= T and created_timestamp <= T (DESIGN.md section 1): a
value back-filled after T is never seen at T.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MISSING = -1


def to_micros(timestamps: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow timestamp column (any unit, UTC) -> int64 microseconds since the epoch."""
    return pc.cast(pc.cast(timestamps, pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy()


class KeyRanges:
    """Where each key's rows lie in a sorted key array: [first, end) per query key. A gather from
    per-key arrays when the keys are small non-negative integers, else two binary searches."""

    def __init__(self, sorted_keys: np.ndarray):
        self.keys = sorted_keys
        self._first = self._end = None
        if len(sorted_keys) and sorted_keys[0] >= 0 and sorted_keys[-1] < 8 * len(sorted_keys) + (1 << 20):
            ids = np.arange(int(sorted_keys[-1]) + 1)
            self._first, self._end = np.searchsorted(sorted_keys, ids, "left"), np.searchsorted(sorted_keys, ids, "right")

    @property
    def dense(self) -> bool:
        """Whether lookups gather (small integer keys) rather than search."""
        return self._first is not None

    def of(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first, end) row of each query key; first == end for a key with no rows. Shapes (N,)."""
        if self._first is None:
            return np.searchsorted(self.keys, keys, "left"), np.searchsorted(self.keys, keys, "right")
        inside = (keys >= 0) & (keys < len(self._first))
        at = np.where(inside, keys, 0)
        return np.where(inside, self._first[at], 0), np.where(inside, self._end[at], 0)


class ItemEmbeddingIndex:
    """Versions of one embedding column, sorted by (item_id, event_timestamp, created_timestamp).

    Timestamps are int64 microseconds since the epoch (UTC).
    """

    def __init__(self, item_ids: np.ndarray, event_us: np.ndarray, created_us: np.ndarray, vectors: np.ndarray):
        order = np.lexsort((created_us, event_us, item_ids))
        self.item_ids = np.asarray(item_ids, dtype=np.int64)[order]
        self.event_us = np.asarray(event_us, dtype=np.int64)[order]
        self.created_us = np.asarray(created_us, dtype=np.int64)[order]
        self.vectors = np.asarray(vectors, dtype=np.float32)[order]  # (V, D)
        self.ranges = KeyRanges(self.item_ids)  # each item's versions

    @classmethod
    def from_arrow(cls, table: pa.Table, column: str, source: str = "") -> "ItemEmbeddingIndex":
        """All versions of one vector column of an Arrow table with item_id, event_timestamp,
        created_timestamp. Null or empty vectors (an item without an image) are not versions."""
        values = table.column(column).combine_chunks()
        lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)  # (V,)
        keep = lengths > 0
        dims = sorted(set(lengths[keep].tolist()))
        if len(dims) > 1:
            raise ValueError(f"{source or 'table'}: {column} has mixed vector lengths {dims}")
        dim = dims[0] if dims else 0
        flat = pc.fill_null(values.filter(pa.array(keep)).flatten(), 0.0)
        vectors = flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim) if dim else np.zeros((0, 0), np.float32)
        return cls(table.column("item_id").to_numpy()[keep], to_micros(table.column("event_timestamp"))[keep],
                   to_micros(table.column("created_timestamp"))[keep], vectors)

    @property
    def dim(self) -> int:
        """Vector length D of the stored versions."""
        return int(self.vectors.shape[1])

    def lookup(self, item_ids: np.ndarray, as_of_us: np.ndarray) -> np.ndarray:
        """Row index of the version valid at ``as_of_us`` for each query, or ``MISSING``. Shapes (N,)."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        as_of_us = np.broadcast_to(np.asarray(as_of_us, dtype=np.int64), item_ids.shape)
        if len(self.item_ids) == 0:  # no versions at all (e.g. no item has an image)
            return np.full(item_ids.shape, MISSING)
        first, end = self.ranges.of(item_ids)
        idx = end - 1  # newest version of the item
        pending = idx >= first
        # Step back over versions not yet valid at T; items have few versions, so few passes.
        while True:
            too_new = pending & ((self.event_us[np.maximum(idx, 0)] > as_of_us) | (self.created_us[np.maximum(idx, 0)] > as_of_us))
            if not too_new.any():
                break
            idx = np.where(too_new, idx - 1, idx)
            pending &= idx >= first
        return np.where(pending, idx, MISSING)

    def vectors_at(self, item_ids: np.ndarray, as_of_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) vectors (zeros where missing) and the (N,) bool mask of found versions."""
        rows = self.lookup(item_ids, as_of_us)
        found = rows != MISSING
        out = np.zeros((rows.shape[0], self.dim), dtype=np.float32)
        out[found] = self.vectors[rows[found]]
        return out, found

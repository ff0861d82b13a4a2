"""Point-in-time lookup of versioned item embeddings, in numpy.

For (item_id, T) it returns the version with the greatest (event_timestamp, created_timestamp)
among those with event_timestamp <= T and created_timestamp <= T (DESIGN.md section 1): a
value back-filled after T is never seen at T.
"""
from __future__ import annotations

import numpy as np

MISSING = -1


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

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def lookup(self, item_ids: np.ndarray, as_of_us: np.ndarray) -> np.ndarray:
        """Row index of the version valid at ``as_of_us`` for each query, or ``MISSING``. Shapes (N,)."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        as_of_us = np.broadcast_to(np.asarray(as_of_us, dtype=np.int64), item_ids.shape)
        if len(self.item_ids) == 0:  # no versions at all (e.g. no item has an image)
            return np.full(item_ids.shape, MISSING)
        first = np.searchsorted(self.item_ids, item_ids, side="left")
        idx = np.searchsorted(self.item_ids, item_ids, side="right") - 1  # newest version of the item
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

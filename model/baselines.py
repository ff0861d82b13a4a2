"""Model-free CTR baselines, the yardstick every trained model must beat (``make bench-models``).

Both are fitted on the train split only and score valid/test rows; neither can be gamed by
selection because neither has anything to select.

- **popularity**: the target item's click-through rate over the train split, smoothed towards
  the train positive rate with ``prior_weight`` pseudo-impressions. An item never seen in train
  scores the prior.
- **co-like**: items as vectors of the users who clicked them in train (L2-normalised rows of the
  item x user click matrix); a row scores the mean cosine between its target and its history
  items (the history of the row itself, point-in-time). A row with no usable pair scores 0.

Notation: B rows, L history positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

POPULARITY_PRIOR_WEIGHT = 10.0


@dataclass(frozen=True)
class Popularity:
    """Smoothed per-item train CTR."""

    items: np.ndarray  # sorted item ids seen in train
    ctr: np.ndarray  # (n,) smoothed CTR per item
    prior: float  # the train positive rate

    @classmethod
    def fit(cls, items: np.ndarray, labels: np.ndarray, prior_weight: float = POPULARITY_PRIOR_WEIGHT) -> "Popularity":
        """Fit on train rows: (n,) item ids and 0/1 labels -> per-item CTR smoothed towards the train
        positive rate with ``prior_weight`` pseudo-impressions."""
        items = np.asarray(items, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.float64)
        if not len(items):
            raise ValueError("popularity needs at least one train row")
        prior = float(labels.mean())
        ids, inverse = np.unique(items, return_inverse=True)
        impressions = np.bincount(inverse).astype(np.float64)
        clicks = np.bincount(inverse, weights=labels)
        return cls(ids, (clicks + prior_weight * prior) / (impressions + prior_weight), prior)

    def score(self, items: np.ndarray) -> np.ndarray:
        """(B,) item ids -> (B,) smoothed train CTR, the prior for items not seen in train."""
        items = np.asarray(items, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.items, items), 0, len(self.items) - 1)
        found = self.items[pos] == items
        return np.where(found, self.ctr[pos], self.prior)


@dataclass(frozen=True)
class CoLike:
    """Item-item cosine over the users who clicked both, from the train split."""

    items: np.ndarray  # sorted item ids with at least one train click
    vectors: sparse.csr_matrix  # (n, users) L2-normalised click rows

    @classmethod
    def fit(cls, users: np.ndarray, items: np.ndarray, labels: np.ndarray) -> "CoLike":
        """Fit on train rows: (n,) user ids, item ids and labels -> L2-normalised item x user click rows
        (clicked rows only; a repeat click counts once)."""
        clicked = np.asarray(labels) > 0
        users, items = np.asarray(users, np.int64)[clicked], np.asarray(items, np.int64)[clicked]
        item_ids, item_row = np.unique(items, return_inverse=True)
        _, user_col = np.unique(users, return_inverse=True)
        matrix = sparse.csr_matrix((np.ones(len(items)), (item_row, user_col)),
                                   shape=(len(item_ids), int(user_col.max()) + 1 if len(user_col) else 0))
        matrix.data[:] = 1.0  # a user who clicked an item twice counts once
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        return cls(item_ids, sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix)

    def _rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.clip(np.searchsorted(self.items, ids), 0, max(len(self.items) - 1, 0))
        found = (self.items[pos] == ids) if len(self.items) else np.zeros(ids.shape, bool)
        return pos, found

    def score(self, targets: np.ndarray, hist_ids: np.ndarray, hist_mask: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """(B,) targets, (B, L) history ids and mask -> (B,) mean cosine over usable history pairs."""
        targets = np.asarray(targets, np.int64)
        B, L = hist_ids.shape  # rows, history positions
        out = np.zeros(B)
        t_pos, t_found = self._rows(targets)
        h_pos, h_found = self._rows(np.asarray(hist_ids, np.int64))
        usable = np.asarray(hist_mask, bool) & h_found & t_found[:, None]  # (B, L)
        for lo in range(0, B, chunk):
            rows, cols = np.nonzero(usable[lo:lo + chunk])
            if not len(rows):
                continue
            a = self.vectors[t_pos[lo + rows]]
            b = self.vectors[h_pos[lo + rows, cols]]
            cos = np.asarray(a.multiply(b).sum(axis=1)).ravel()  # (pairs,)
            sums = np.bincount(rows, weights=cos, minlength=min(chunk, B - lo))
            counts = np.bincount(rows, minlength=min(chunk, B - lo))
            out[lo:lo + chunk] = sums / np.maximum(counts, 1)
        return out

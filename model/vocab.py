"""Item id vocabulary: raw ids -> embedding rows (0 padding, 1 unseen, 2.. ids seen in training)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from mmfs.model.data import open_history, read_manifest, snapshot_rows
from mmfs.model.layers import OOV, PAD


class IdVocab:
    """Sorted raw ids with their own embedding row; every other id shares the OOV row."""

    def __init__(self, ids: np.ndarray):
        self.ids = np.unique(np.asarray(ids, dtype=np.int64))  # sorted

    def __len__(self) -> int:
        return len(self.ids) + 2

    def index(self, raw: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Same shape as ``raw``: row indices; OOV for unseen ids, PAD where ``mask`` is false."""
        values = raw.cpu().numpy()
        pos = np.searchsorted(self.ids, values)
        found = (pos < len(self.ids)) & (self.ids[np.minimum(pos, len(self.ids) - 1)] == values) if len(self.ids) else np.zeros_like(values, bool)
        idx = torch.from_numpy(np.where(found, pos + 2, OOV).astype(np.int64))
        return idx if mask is None else torch.where(mask.cpu(), idx, torch.full_like(idx, PAD))

    @classmethod
    def from_training_set(cls, training_set: str | Path, split: str = "train", min_count: int = 1) -> "IdVocab":
        """Ids seen as a target at least ``min_count`` times in one split, or in a history there,
        streamed row group by row group. Rarer ids share the OOV row, which therefore trains on
        the items that look most like the never-seen ones at test time."""
        index, key = open_history(read_manifest(training_set))  # histories by reference: (None, None) when inline
        targets, history = [], []
        for path in sorted((Path(training_set) / f"split={split}").glob("*.parquet")):
            file = pq.ParquetFile(path)
            for group in range(file.num_row_groups):
                if index is None:
                    table = file.read_row_group(group, columns=["item_id", "hist_item_ids"])
                    history.append(np.unique(pc.list_flatten(table.column("hist_item_ids")).to_numpy()))
                else:
                    table = file.read_row_group(group, columns=["item_id", "user_id", key])
                    rows = np.unique(snapshot_rows(index, table, key))
                    ids, mask = index.padded(rows[rows >= 0], int(index.lengths.max(initial=0)))
                    history.append(np.unique(ids[mask]))
                targets.append(table.column("item_id").to_numpy())
        if not targets:
            return cls(np.zeros(0, np.int64))
        ids, counts = np.unique(np.concatenate(targets), return_counts=True)
        if min_count <= 1:
            return cls(np.concatenate([ids] + history))
        return cls(ids[counts >= min_count])

"""The target-aware similarity feature, written once.

``s_j = cos(m_t, m_j)`` between a target item's multimodal embedding and each history item's.
The target_similarity Spark job writes it for training rows; the online scorer imports this same
function for candidates at request time, so the training and serving values come from one path.

Notation: B rows (or C candidates), L history positions, D embedding dimension.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmfs.core.features.item_index import ItemEmbeddingIndex, to_micros


def target_similarity(target: np.ndarray, history: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Cosine similarity of each target with each of its history items.

    Args:
        target: (B, D) target embeddings.
        history: (B, L, D) history embeddings, or (1, L, D) shared by all B targets (the scorer's
            one user and C candidates).
        mask: (B, L) or (1, L) bool, true where the history position holds a real item.

    Returns:
        (B, L) float32 in [-1, 1]; 0 where the mask is false or a vector has zero norm.
    """
    target = np.asarray(target, dtype=np.float64)
    history = np.asarray(history, dtype=np.float64)
    if target.ndim != 2 or history.ndim != 3 or target.shape[-1] != history.shape[-1]:
        raise ValueError(f"expected target (B, D) and history (B, L, D), got {target.shape} and {history.shape}")
    target_norm = np.sqrt(np.einsum("bd,bd->b", target, target))  # (B,)
    history_norm = np.sqrt(np.einsum("bld,bld->bl", history, history))  # (B|1, L)
    if history.shape[0] == 1:  # one user's history shared by B candidates: one matrix product
        dots = target @ history[0].T  # (B, L)
    else:
        dots = np.einsum("bd,bld->bl", target, history)  # (B, L)
    denom = target_norm[:, None] * history_norm  # (B, L)
    valid = np.broadcast_to(mask, dots.shape) & (denom > 0)
    sims = np.divide(dots, denom, out=np.zeros_like(dots), where=valid)
    return np.clip(sims, -1.0, 1.0).astype(np.float32)


CHUNK_ROWS = 2048  # bounds the padded (rows, L, D) float64 block the similarity function builds


def similarity_batch(batch: pa.RecordBatch, index: ItemEmbeddingIndex) -> pa.RecordBatch:
    """Point-in-time lookups plus the shared similarity function for one Arrow batch, vectorised."""
    n = batch.num_rows
    as_of = to_micros(batch.column("event_timestamp"))  # (B,)
    hist = batch.column("hist_item_ids")
    lengths = pc.fill_null(pc.list_value_length(hist), 0).to_numpy().astype(np.int64)  # (B,)
    flat_ids = hist.flatten().to_numpy()  # (sum L,)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (B,)
    row_of = np.repeat(np.arange(n), lengths)  # (sum L,)
    pos = np.arange(len(flat_ids)) - starts[row_of]  # (sum L,)
    width = int(lengths.max()) if n else 0
    hist_ids = np.zeros((n, width), dtype=np.int64)  # (B, L) padded
    hist_ids[row_of, pos] = flat_ids
    padding_mask = np.arange(width)[None, :] < lengths[:, None]  # (B, L)

    target_vec, target_found = index.vectors_at(batch.column("item_id").to_numpy(), as_of)  # (B, D), (B,)
    sims = np.zeros((n, width), dtype=np.float32)  # (B, L)
    hist_found = np.zeros((n, width), dtype=bool)  # (B, L)
    for lo in range(0, n, CHUNK_ROWS):
        hi = min(n, lo + CHUNK_ROWS)
        vec, found = index.vectors_at(hist_ids[lo:hi].ravel(), np.repeat(as_of[lo:hi], width))
        found = found.reshape(hi - lo, width) & padding_mask[lo:hi]  # (b, L)
        sims[lo:hi] = target_similarity(target_vec[lo:hi], vec.reshape(hi - lo, width, index.dim), found)
        hist_found[lo:hi] = found
    # No embedding known at T (for item j, or for the target): null, never a made-up 0.
    valid = hist_found[row_of, pos] & target_found[row_of]
    values = pa.array(sims[row_of, pos], type=pa.float32(), mask=~valid)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32), type=pa.int32())
    return pa.RecordBatch.from_arrays(
        batch.columns + [pa.ListArray.from_arrays(offsets, values), pa.array(target_found, type=pa.bool_())],
        names=batch.schema.names + ["hist_sim", "target_has_emb"],
    )

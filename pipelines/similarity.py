"""The target-aware similarity feature, written once.

``s_j = cos(m_t, m_j)`` between a target item's multimodal embedding and each history item's.
The target_similarity Spark job writes it for training rows; the online scorer imports this same
function for candidates at request time, so the training and serving values come from one path.

Notation: B rows (or C candidates), L history positions, D embedding dimension.
"""
from __future__ import annotations

import numpy as np


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
    target_norm = np.linalg.norm(target, axis=-1)  # (B,)
    history_norm = np.linalg.norm(history, axis=-1)  # (B|1, L)
    if history.shape[0] == 1:  # one user's history shared by B candidates: one matrix product
        dots = target @ history[0].T  # (B, L)
    else:
        dots = np.einsum("bd,bld->bl", target, history)  # (B, L)
    denom = target_norm[:, None] * history_norm  # (B, L)
    valid = np.broadcast_to(mask, dots.shape) & (denom > 0)
    sims = np.divide(dots, denom, out=np.zeros_like(dots), where=valid)
    return np.clip(sims, -1.0, 1.0).astype(np.float32)

"""AUC, GAUC, logloss and expected calibration error, the way CTR papers report them."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``scores`` against 0/1 ``labels``; NaN when only one class is present."""
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Per-user AUC weighted by the user's impressions, over users with both classes only."""
    order = np.argsort(users, kind="stable")
    users, labels, scores = users[order], labels[order], scores[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    total, weight = 0.0, 0
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(users)]):
        y = labels[lo:hi]
        positives = y.sum()
        if 0 < positives < len(y):
            total += roc_auc_score(y, scores[lo:hi]) * len(y)
            weight += len(y)
    return total / weight if weight else float("nan")


def logloss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Binary log loss, probabilities clipped to [1e-7, 1 - 1e-7]."""
    return float(log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7), labels=[0, 1]))


ECE_BINS = 15


def ece(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: over ``bins`` equal-width probability bins, the mean |predicted
    rate - observed rate|, weighted by each bin's share of rows."""
    labels, probabilities = np.asarray(labels, dtype=np.float64), np.asarray(probabilities, dtype=np.float64)
    if not len(labels):
        return float("nan")
    which = np.minimum((probabilities * bins).astype(np.int64), bins - 1)  # (N,) bin of each row
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, probabilities, bins) - np.bincount(which, labels, bins))  # per bin: |sum p - sum y|
    return float(gap.sum() / count.sum())


def all_metrics(users: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """AUC, GAUC, logloss and ECE of (B,) logits, and the row count."""
    probabilities = 1 / (1 + np.exp(-logits))
    return {"auc": auc(labels, logits), "gauc": gauc(users, labels, logits), "logloss": logloss(labels, probabilities),
            "ece": ece(labels, probabilities), "rows": int(len(labels))}

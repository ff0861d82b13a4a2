"""What the scorer answers: per-candidate scores with flags, and the request's result."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ItemScore:
    """One candidate's click probability and logit (None with an error) and flags."""

    item_id: int
    score: float | None  # click probability; None with an error
    logit: float | None
    flags: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Prepared:
    """``Scorer.prepare``'s output: the model's tensors, per-candidate flags, unknown items, user flags,
    stale count and the similarity time."""

    tensors: dict[str, torch.Tensor]
    flags: list[list[str]]
    unknown: np.ndarray  # (C,) bool: neither the store nor the model knows the item
    user_flags: list[str]
    stale: int
    similarity_ms: float
    codes: dict | None = None  # view -> (C,) status codes of the candidates' rows


@dataclass
class ScoreResult:
    """One request's scores, flags, history length, stale feature count and timings in ms."""

    user_id: int
    feature_service: str
    items: list[ItemScore]
    user_flags: list[str]
    history_len: int
    stale_features: int
    timings_ms: dict[str, float]
    request_id: str = ""  # the served-feature log's key for this request ("" when not logged)

    @property
    def scores(self) -> list[float | None]:
        """The candidates' click probabilities in request order, None for an error entry."""
        return [i.score for i in self.items]

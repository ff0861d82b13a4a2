"""What the scorer answers: per-candidate scores with flags, and the request's result."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

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
    """One request's scores, flags, history length, stale feature count and timings in ms.

    The candidates' results are arrays in request order (C candidates): building one object per
    candidate cost about 1 ms at C = 1,200, so ``items`` (one ``ItemScore`` each) is made only
    when asked for."""

    user_id: int
    feature_service: str
    item_ids: list[int]  # (C,) the candidates, in request order
    probabilities: np.ndarray  # (C,) float64 click probabilities; NaN for an error entry
    logits: np.ndarray  # (C,) float64; NaN for an error entry
    flags: list[list[str]]  # (C,) each candidate's flags
    errors: dict[int, str]  # candidate position -> why it has no score (unknown items only)
    user_flags: list[str]
    history_len: int
    stale_features: int
    timings_ms: dict[str, float]
    request_id: str = ""  # the served-feature log's key for this request ("" when not logged)

    @property
    def scores(self) -> list[float | None]:
        """The candidates' click probabilities in request order, None for an error entry."""
        scores = self.probabilities.tolist()
        for c in self.errors:
            scores[c] = None
        return scores

    @property
    def item_errors(self) -> list[str | None]:
        """Each candidate's error, None where it was scored."""
        errors: list[str | None] = [None] * len(self.item_ids)
        for c, error in self.errors.items():
            errors[c] = error
        return errors

    @cached_property
    def items(self) -> list[ItemScore]:
        """One ``ItemScore`` per candidate, in request order (built on first use)."""
        return [ItemScore(item, score, None if error else logit, flags, error) for item, score, logit, flags, error in
                zip(self.item_ids, self.scores, self.logits.tolist(), self.flags, self.item_errors)]

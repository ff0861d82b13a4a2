"""The smoothed CTR of the running stats (item_stats, user_stats), written once.

``ctr = (clicks + prior_ctr * prior_weight) / (impressions + prior_weight)``: a new item or user
is not scored 0 or 1 on one event. The Spark jobs call it on Columns, the feedback path on
numbers: the arithmetic is the same expression either way.
"""
from __future__ import annotations

PRIOR_CTR = 0.5
PRIOR_WEIGHT = 2.0


def smoothed_ctr(clicks, impressions, prior_ctr: float = PRIOR_CTR, prior_weight: float = PRIOR_WEIGHT):
    """Clicks and impressions (numbers, numpy arrays or Spark Columns) -> the smoothed CTR."""
    return (clicks + prior_ctr * prior_weight) / (impressions + prior_weight)

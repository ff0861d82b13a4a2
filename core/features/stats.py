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


def running_stats_rows(events, counted: dict, prior_ctr: float = PRIOR_CTR, prior_weight: float = PRIOR_WEIGHT) -> list[tuple]:
    """The running-stats rule on rows, as the Spark job ``item_stats.running_stats`` applies it to a
    table: ``events`` are ``(key, t, label)``, ``counted`` maps a key to the ``(impressions,
    clicks)`` already counted before them. One ``(key, stamp_after(t), impressions, clicks, ctr)``
    per (key, distinct t), in (t, key) order; the counts include every event at t."""
    from mmfs.core.features.snapshot import stamp_after

    per_instant: dict[tuple, list[int]] = {}
    for key, ts, label in events:
        n_clicks = per_instant.setdefault((key, ts), [0, 0])
        n_clicks[0] += 1
        n_clicks[1] += int(label)
    counts = dict(counted)
    rows = []
    for (key, ts), (n, clicks) in sorted(per_instant.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        before = counts.get(key, (0, 0))
        counts[key] = (before[0] + n, before[1] + clicks)
        rows.append((key, stamp_after(ts), *counts[key], smoothed_ctr(counts[key][1], counts[key][0], prior_ctr, prior_weight)))
    return rows

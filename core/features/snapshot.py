"""The snapshot rule, written once: a row that holds the events up to and including time t is
stamped ``t + 1 µs``.

Feast joins a feature row to an entity row when ``feature_ts <= entity_ts``; stamped this way, a
training row at T sees only the events strictly before T, and an event at exactly T (a colliding
timestamp) never leaks into its own row. The Spark jobs (``user_sequences``, ``item_stats``,
``user_stats``) stamp with ``STAMP_AFTER_SQL``, the feedback path with ``stamp_after``; the history
a sequence snapshot holds is ``next_history`` in both.
"""
from __future__ import annotations

import datetime as dt

STAMP_AFTER_US = 1
STAMP_AFTER = dt.timedelta(microseconds=STAMP_AFTER_US)
STAMP_AFTER_SQL = f"INTERVAL {STAMP_AFTER_US} MICROSECOND"  # Spark SQL: F.col(ts) + F.expr(STAMP_AFTER_SQL)


def stamp_after(ts: dt.datetime) -> dt.datetime:
    """The stamp of a row that holds the events up to and including ``ts``."""
    return ts + STAMP_AFTER


def next_history(history: list[tuple[int, int]], positives: list[tuple[int, int]], max_len: int) -> list[tuple[int, int]]:
    """A user's last ``max_len`` positives after ``positives`` (each ``(time µs, item_id)``) join
    ``history``: ordered by (time, item), oldest first, as ``user_sequences.build_snapshots`` keeps them."""
    return sorted(history + positives)[-max_len:]

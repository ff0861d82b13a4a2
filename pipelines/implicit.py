"""implicit: an events file as implicit feedback, the shape of a ranking team's logs (what was shown,
what was clicked), for benchmarks on data that only holds positives (ratings, purchases).

    mmfs implicit --events out/ml/events --out data/ml_implicit/events.parquet --positives all

Every chosen event becomes a positive (``--positives all``: every row, as for ratings;
``clicks``: only rows labelled 1). Each positive gets ``--negatives`` sampled negatives for the
same user at the same instant: items drawn in proportion to their popularity *at that instant*
(the item of a positive drawn uniformly from the ``--window`` positives up to that instant, so an
item is drawn as often as it is liked around then, and never before it exists), never an item the
user has a positive or any other event for, and never the same item twice for one user at one
instant. Negatives matched to the positives' popularity at the time make the item's popularity,
and its running stats, say almost nothing, so the history and the content carry the task. (Drawn
by whole-log popularity instead, a negative at time t is often a film liked only years later,
which the item's running stats give away.)

Writes the raw events contract (``user_id``, ``item_id``, ``event_timestamp``, ``label``), sorted by
user and time; deterministic for a given seed. Not a stand-in for real impressions: the negatives
are a sampler's, and a benchmark says so.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmfs.core.contracts.tables import EVENTS, RAW_EVENT_COLUMNS

MAX_ROUNDS = 200  # redraws of rejected negatives before giving up on a user
MIN_POOL = 1_000  # positives the log's earliest instants draw from (they have fewer behind them)


def implicit_events(events: pa.Table, negatives: int = 1, positives: str = "all", seed: int = 0, window: int = 10_000) -> pa.Table:
    """``events`` (the raw contract's columns) -> positives plus popularity-matched negatives.

    Raises ValueError naming the user when a user has too few items left to draw negatives from.
    """
    if positives not in ("all", "clicks"):
        raise ValueError(f"positives must be 'all' or 'clicks', got {positives!r}")
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1, got {negatives}")
    missing = [c for c in RAW_EVENT_COLUMNS if c not in events.column_names]
    if missing:
        raise ValueError(f"events lack column(s) {missing}")
    users = events.column("user_id").to_numpy()
    item_ids = events.column("item_id").to_numpy(zero_copy_only=False)
    stamps = events.column("event_timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    labels = events.column("label").to_numpy()
    items, item_idx = np.unique(item_ids, return_inverse=True)  # (I,), (N,)
    user_keys, user_idx = np.unique(users, return_inverse=True)
    chosen = np.ones(len(users), bool) if positives == "all" else labels == 1
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    pos_user, pos_item, pos_stamp = user_idx[chosen], item_idx[chosen], stamps[chosen]
    by_time = np.argsort(pos_stamp, kind="stable")
    sorted_stamp, sorted_item = pos_stamp[by_time], pos_item[by_time]
    n_items = np.int64(len(items))
    touched = np.unique(user_idx.astype(np.int64) * n_items + item_idx)  # every (user, item) with any event
    rng = np.random.default_rng(seed)

    neg_user = np.repeat(pos_user, negatives)
    neg_stamp = np.repeat(pos_stamp, negatives)
    # the window of positives each negative draws from: the last ``window`` up to its instant (the
    # log's first MIN_POOL positives for its earliest instants, which have fewer behind them)
    upto = np.searchsorted(sorted_stamp, neg_stamp, side="right")  # positives at or before the instant
    hi = np.maximum(upto, min(MIN_POOL, len(sorted_stamp)))
    lo = np.maximum(hi - window, 0)

    def draw(rows: np.ndarray) -> np.ndarray:
        return sorted_item[lo[rows] + (rng.random(len(rows)) * (hi[rows] - lo[rows])).astype(np.int64)]

    neg_item = draw(np.arange(len(neg_user)))
    todo = np.arange(0)
    for round_ in range(MAX_ROUNDS):
        bad = np.isin(neg_user.astype(np.int64) * n_items + neg_item, touched)
        # one item at most once per (user, instant): the first of equal keys stays, the others redraw
        _, first = np.unique(np.stack([neg_user, neg_stamp, neg_item], axis=1), axis=0, return_index=True)
        repeated = np.ones(len(neg_user), bool)
        repeated[first] = False
        todo = np.flatnonzero(bad | repeated)
        if not len(todo):
            break
        if round_ % 10 == 9:  # still stuck (the window is all the user's own items): widen it, back in time first
            at_start = lo[todo] == 0
            lo[todo] = np.maximum(lo[todo] - window, 0)
            hi[todo[at_start]] = np.minimum(hi[todo[at_start]] + window, len(sorted_stamp))
        neg_item[todo] = draw(todo)
    else:
        worst = user_keys[np.bincount(neg_user[todo]).argmax()].item()
        raise ValueError(f"user {worst!r}: no popularity-drawn item left that the user has no event for "
                         f"after {MAX_ROUNDS} draws ({len(todo)} negatives unplaced)")

    out_user = np.concatenate([user_keys[pos_user], user_keys[neg_user]])
    out_item = np.concatenate([items[pos_item], items[neg_item]])
    out_stamp = np.concatenate([pos_stamp, neg_stamp])
    out_label = np.concatenate([np.ones(len(pos_user), np.int32), np.zeros(len(neg_user), np.int32)])
    order = np.lexsort((out_label, out_stamp, out_user))
    schema = EVENTS.arrow()
    return pa.table({
        "user_id": pa.array(out_user[order]).cast(schema.field("user_id").type),
        "item_id": pa.array(out_item[order]).cast(schema.field("item_id").type),
        "event_timestamp": pa.array(out_stamp[order], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "label": pa.array(out_label[order]),
    }, schema=schema)


def main(argv: list[str] | None = None) -> int:
    """``mmfs implicit``: rewrite an events file (or table folder) as implicit feedback. Returns 0."""
    parser = argparse.ArgumentParser(prog="mmfs implicit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", required=True, help="events parquet file or folder (the raw contract's columns)")
    parser.add_argument("--out", required=True, help="output parquet file")
    parser.add_argument("--positives", choices=("all", "clicks"), default="all",
                        help="all: every event is a positive (ratings); clicks: only rows labelled 1")
    parser.add_argument("--negatives", type=int, default=1, help="sampled negatives per positive")
    parser.add_argument("--window", type=int, default=10_000, help="positives up to the instant that a negative's item is drawn from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        events = pq.read_table(args.events, columns=RAW_EVENT_COLUMNS)
        table = implicit_events(events, args.negatives, args.positives, args.seed, args.window)
    except (ValueError, OSError) as exc:
        parser.exit(2, f"mmfs implicit: error: {exc}\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, args.out)
    positives = int(pa.compute.sum(table.column("label")).as_py())
    print(f"implicit: {positives:,} positives, {table.num_rows - positives:,} negatives -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

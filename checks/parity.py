"""Online/offline parity: does the online store serve what a training row at T would hold?

    mmfs parity --root out/movielens --at 2018-10-01T00:00:00Z [--config redis] [--materialize] [--sample 200]

For sampled (user, item) pairs it compares, feature by feature, the online value (read as of T,
TTL honoured) with the offline point-in-time value at T from the training-set join, and the
request-time similarities computed online by the scorer's path with the ones the Spark job's
code computes offline. Values must agree to 1e-6 and sequences exactly. Per feature it reports,
Chronon-style, mismatch, missing (offline has it, online not) and extra (online has it, offline
not) rates. Exit status 1 when anything disagrees. Materialise up to T first (``--materialize``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmfs.store import training_set
from mmfs.store.feast_store import add_repo_args, materialize, open_store, parse_time
from mmfs.core.contracts.tables import SIMILARITY_INPUT
from mmfs.core.features.similarity import similarity_batch
from mmfs.online.reader import PRESENT, STALE, OnlineReader
from mmfs.online.similarity import embedding_view, online_similarities

TOLERANCE = 1e-6


@dataclass
class FeatureParity:
    """Counts of one feature's online/offline comparisons, with a few example disagreements."""

    feature: str
    compared: int = 0
    matched: int = 0
    mismatched: int = 0
    missing: int = 0
    extra: int = 0
    stale: int = 0
    both_present: int = 0  # comparisons of two real values (not both missing)
    max_abs_diff: float = 0.0
    examples: list = field(default_factory=list)

    def rates(self) -> dict:
        """The counts as rates of ``compared``, for the report."""
        n = max(self.compared, 1)
        return {"feature": self.feature, "compared": self.compared, "both_present": self.both_present, "mismatch_rate": self.mismatched / n,
                "missing_rate": self.missing / n, "extra_rate": self.extra / n, "stale": self.stale,
                "max_abs_diff": self.max_abs_diff, "examples": self.examples[:3]}

    @property
    def ok(self) -> bool:
        """True when no value mismatched, was missing online or was extra online."""
        return self.mismatched == self.missing == self.extra == 0


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _diff(a, b) -> float | None:
    """Largest |a - b| (0 when equal), or None when shapes/types cannot agree."""
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        a, b = list(a), list(b)
        if len(a) != len(b):
            return None
        diffs = [_diff(x, y) for x, y in zip(a, b)]
        return None if any(d is None for d in diffs) else max(diffs, default=0.0)
    if _empty(a) and _empty(b):
        return 0.0
    if _empty(a) or _empty(b):
        return None
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)) or isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        return 0.0 if a == b else None
    return abs(float(a) - float(b))


def compare(result: FeatureParity, key, offline, online, online_status: str) -> None:
    """Count one comparison of an offline value with the online one into ``result``; the online value
    counts only when ``online_status`` is present; values agree within ``TOLERANCE``."""
    result.compared += 1
    if online_status == STALE:
        result.stale += 1
    online_value = online if online_status == PRESENT else None
    if _empty(offline) and _empty(online_value):
        result.matched += 1
        return
    if _empty(online_value):
        result.missing += 1
        result.examples.append({"key": key, "offline": offline, "online": None, "status": online_status})
        return
    if _empty(offline):
        result.extra += 1
        result.examples.append({"key": key, "offline": None, "online": online_value})
        return
    diff = _diff(offline, online_value)
    if diff is None or diff >= TOLERANCE:
        result.mismatched += 1
        result.examples.append({"key": key, "offline": offline, "online": online_value, "abs_diff": diff})
    else:
        result.matched += 1
        result.max_abs_diff = max(result.max_abs_diff, diff)
    result.both_present += 1


def sample_entities(views: list[training_set.ViewJoin], at: dt.datetime, sample: int, seed: int) -> pa.Table:
    """(user, item) pairs with data at or before ``at``, drawn with a seed."""
    con = training_set.connect()
    ids = {}
    for key in ("user_id", "item_id"):
        globs = [v.glob for v in views if v.join_keys == (key,)]
        union = " UNION ".join(f"SELECT DISTINCT {key} FROM read_parquet('{g}') WHERE event_timestamp <= '{at.isoformat()}'::TIMESTAMPTZ" for g in globs)
        found = [r[0] for r in con.execute(f"SELECT {key} FROM ({union}) ORDER BY 1").fetchall()] if union else []
        rng = np.random.default_rng(seed + (key == "item_id"))
        ids[key] = rng.choice(found, size=min(sample, len(found)), replace=False).tolist() if found else []
    n = max(len(ids["user_id"]), len(ids["item_id"]))
    users = [ids["user_id"][i % len(ids["user_id"])] for i in range(n)] if ids["user_id"] else [0] * n
    items = [ids["item_id"][i % len(ids["item_id"])] for i in range(n)] if ids["item_id"] else [0] * n
    return pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
                     "event_timestamp": pa.array([at] * n, pa.timestamp("us", tz="UTC")), "label": pa.array([0] * n, pa.int32())})


def run_parity(store, service_name: str, at: dt.datetime, sample: int = 200, seed: int = 0) -> dict:
    """Compare online with offline values for sampled (user, item) pairs at ``at``, and the request-time
    similarities; returns the report (per-feature rates, ``ok``)."""
    reader = OnlineReader(store, service_name)
    views = [v for v in training_set.service_views(store, service_name) if v.name in reader.views]
    entity = sample_entities(views, at, sample, seed)
    offline = training_set.duckdb_join(views, entity, "inline").to_pylist()  # same join as training rows
    results: dict[str, FeatureParity] = {}
    for view in views:
        fv, features = reader.views[view.name]
        keys = [tuple(row[k] for k in view.join_keys) for row in offline]
        online = reader.read(view.name, [k if len(k) > 1 else k[0] for k in keys], now=at)
        for feature in features:
            result = results.setdefault(f"{view.name}:{feature}", FeatureParity(f"{view.name}:{feature}"))
            for i, row in enumerate(offline):
                compare(result, keys[i], row[feature], online.values[feature][i], online.status[i])

    if embedding_view(reader) in reader.views and "user_sequence" in reader.views:
        # Request-time similarities: the scorer's online path vs the Spark job's offline code.
        index_dir = next(Path(v.glob).parent for v in views if v.name == embedding_view(reader))
        from mmfs.model.data import load_embedding_index

        index = load_embedding_index(index_dir, "mm_emb")
        batch = pa.RecordBatch.from_pylist(
            [{"user_id": r["user_id"], "item_id": r["item_id"], "event_timestamp": r["event_timestamp"], "label": 0,
              "hist_item_ids": r["hist_item_ids"] or [], "hist_len": r["hist_len"] or 0} for r in offline],
            schema=SIMILARITY_INPUT.arrow())
        offline_sims = similarity_batch(batch, index).column("hist_sim").to_pylist()
        result = results.setdefault("request_time:hist_sim", FeatureParity("request_time:hist_sim"))
        for row, off in zip(offline, offline_sims):
            hist, sims, known = online_similarities(reader, row["user_id"], [row["item_id"]], now=at)
            on = [float(s) if k else None for s, k in zip(sims[0], known[0])]
            key = (row["user_id"], row["item_id"])
            if hist != (row["hist_item_ids"] or []):
                compare(result, key, off, None, "missing")
            elif not on and not off:
                compare(result, key, None, None, PRESENT)
            else:
                compare(result, key, [None if _empty(x) else x for x in off], on, PRESENT)
    report = {
        "feature_service": service_name, "at": at.isoformat(), "pairs": entity.num_rows,
        "online_store": store.config.online_store.type, "tolerance": TOLERANCE,
        "features": [r.rates() for r in results.values()],
        "ok": all(r.ok for r in results.values()) and entity.num_rows > 0,
    }
    return report


def markdown(report: dict) -> str:
    """The parity report as a Markdown table."""
    lines = [f"# Online/offline parity: {report['feature_service']} at {report['at']} ({report['online_store']})", "",
             f"{report['pairs']} sampled (user, item) pairs, tolerance {report['tolerance']}. "
             f"Result: **{'OK' if report['ok'] else 'MISMATCH'}**", "",
             "| feature | compared | both present | mismatch | missing | extra | stale online | max abs diff |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for f in report["features"]:
        lines.append(f"| {f['feature']} | {f['compared']} | {f['both_present']} | {f['mismatch_rate']:.2%} | {f['missing_rate']:.2%} | "
                     f"{f['extra_rate']:.2%} | {f['stale']} | {f['max_abs_diff']:.2e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``mmfs parity``: run the comparison, print it, optionally write parity.json/parity.md; 1 when anything disagrees."""
    parser = argparse.ArgumentParser(prog="mmfs parity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--at", type=parse_time, required=True, help="compare as of this UTC time")
    parser.add_argument("--service", default="ctr_dmf_v1")
    add_repo_args(parser)
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--materialize", action="store_true", help="materialise up to --at first")
    parser.add_argument("--out", default=None, help="write parity.json and parity.md here")
    args = parser.parse_args(argv)
    if args.materialize:
        materialize(args.config, args.repo, args.root, end=args.at)
    store = open_store(args.config, args.repo, args.root)
    report = run_parity(store, args.service, args.at, args.sample, args.seed)
    text = markdown(report)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "parity.json").write_text(json.dumps(report, indent=2, default=str))
        (Path(args.out) / "parity.md").write_text(text)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

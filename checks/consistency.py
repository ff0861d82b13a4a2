"""consistency: what the scorer served against the offline tables, Chronon-style, and drift.

    mmfs consistency --root out/movielens [--log DIR] [--training-set DIR] [--out DIR]
                     [--max-mismatch 0.01] [--max-missing 0.01] [--max-extra 0.01] [--max-psi 0.25]

Reads the served-feature log (``<root>/_served``, ``mmfs.serving.request_log``) and, for each request,
the offline point-in-time values at the request's time (the newest row stamped <= that time, as
Feast's join and the online store see it): the user's sequence and stats, and each candidate's
item stats. Per feature, over every (request, entity) pair:

- ``match``: both sides have the value and it is equal (ctr within 1e-6, a float32's rounding);
- ``mismatch``: both have it and it differs;
- ``missing``: the offline table has it, the scorer did not use it (missing online);
- ``extra``: the scorer used a value the offline table does not have at that time.

A value the scorer flagged stale was not used (the training join drops it too): counted as
``stale``, not as missing; nor was one stamped after the request's time (a replay with ``at`` in
the past, when the online store holds a newer row): counted as ``future``. The drift table is the PSI of each numeric feature between the training
set (``--training-set``; its train split) and what was served, over ten quantile bins of the
training values; a PSI is judged only with ``--min-samples`` served values (on a handful it
measures the sample, not the drift). Writes ``consistency.json``, ``consistency.md`` and ``consistency.png`` under
``--out`` (default ``<root>/reports/consistency``) and exits 1 when a rate or a PSI passes its
threshold.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from mmfs.core.contracts.names import REQUEST_LOG_SUBDIR
from mmfs.pipelines.spark.args import add_common_args, spark_from_args
from mmfs.pipelines.spark.table_io import job_main, read_table

CTR_TOLERANCE = 1e-6
PSI_EPS = 1e-4
BINS = 10
# (feature, its view, entity key, offline table, the log's column, the table's column)
FEATURES = (
    ("user_sequence:hist_item_ids", "user", "user_sequence_snapshots", "hist_item_ids", "hist_item_ids"),
    ("user_stats:user_impressions", "user", "user_stats", "user_impressions", "user_impressions"),
    ("user_stats:user_clicks", "user", "user_stats", "user_clicks", "user_clicks"),
    ("user_stats:user_ctr", "user", "user_stats", "user_ctr", "user_ctr"),
    ("item_stats:impressions", "item", "item_stats", "impressions", "impressions"),
    ("item_stats:clicks", "item", "item_stats", "clicks", "clicks"),
    ("item_stats:ctr", "item", "item_stats", "ctr", "ctr"),
)
DRIFT = ("user_impressions", "user_clicks", "user_ctr", "impressions", "clicks", "ctr", "hist_len", "hist_sim")


def served_users(log: DataFrame) -> DataFrame:
    """One row per request: the user side as served (a value counts as used only when present)."""
    return log.select(
        "request_id", F.col("user_id").alias("key"), F.col("requested_at").alias("at"),
        F.col("seq_status").alias("user_sequence_status"), F.col("user_stats_status"),
        "hist_item_ids", *[F.col(c).cast("double").alias(c) for c in ("user_impressions", "user_clicks", "user_ctr")])


def served_items(log: DataFrame) -> DataFrame:
    """One row per (request, candidate): the item side as served."""
    zipped = F.arrays_zip("item_ids", "item_stats_status", "impressions", "clicks", "ctr")
    return log.select("request_id", F.col("requested_at").alias("at"), F.posexplode(zipped).alias("pos", "c")).select(
        "request_id", "at", "pos", F.col("c.item_ids").alias("key"), F.col("c.item_stats_status").alias("item_stats_status"),
        *[F.col(f"c.{n}").cast("double").alias(n) for n in ("impressions", "clicks", "ctr")])


def as_of(requests: DataFrame, table: DataFrame, key: str, columns: list[str]) -> DataFrame:
    """Each request row with the table's newest row for its key stamped <= its time (``at``): the
    point-in-time values, ``offline_<column>`` (null when none). One pass: the union sorted by time,
    a table row before a request row at the same stamp (Feast's ``feature_ts <= entity_ts``)."""
    rows = table.select(F.col(key).alias("key"), F.col("event_timestamp").alias("at"), F.lit(0).alias("_kind"),
                        F.struct(*[F.col(c) for c in columns]).alias("_row"))
    asked = requests.withColumn("_kind", F.lit(1)).withColumn("_row", F.lit(None).cast(rows.schema["_row"].dataType))
    running = Window.partitionBy("key").orderBy("at", "_kind").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    joined = asked.unionByName(rows, allowMissingColumns=True).withColumn("_row", F.last("_row", ignorenulls=True).over(running))
    return joined.filter(F.col("_kind") == 1).select(*requests.columns, *[F.col(f"_row.{c}").alias(f"offline_{c}") for c in columns])


def compare(joined: DataFrame, feature: str, status: str, served: str, offline: str) -> DataFrame:
    """Counts of match / mismatch / missing / extra / stale for one feature."""
    used = F.col(status) == "present"
    has = F.col(offline).isNotNull()
    if "ctr" in served:
        equal = F.abs(F.col(served) - F.col(offline).cast("double")) <= CTR_TOLERANCE
    elif "hist" in served:
        equal = F.col(served) == F.col(offline)
    else:
        equal = F.col(served) == F.col(offline).cast("double")
    kind = (F.when(F.col(status) == "stale", "stale").when(F.col(status) == "future", "future")
            .when(used & has & equal, "match").when(used & has, "mismatch")
            .when(~used & has, "missing").when(used & ~has, "extra").otherwise("absent"))
    return joined.select(F.lit(feature).alias("feature"), kind.alias("kind")).groupBy("feature", "kind").count()


def consistency_counts(log: DataFrame, tables: dict[str, DataFrame]) -> dict[str, dict[str, int]]:
    """{feature: {kind: count}} over every logged (request, entity) pair."""
    users, items = served_users(log), served_items(log)
    parts = []
    for name, side, table, served, column in FEATURES:
        if table not in tables:
            continue
        requests, status = (users, "user_sequence_status" if table == "user_sequence_snapshots" else "user_stats_status") \
            if side == "user" else (items, "item_stats_status")
        key = "user_id" if side == "user" else "item_id"
        joined = as_of(requests.select("request_id", "key", "at", status, served), tables[table], key, [column])
        parts.append(compare(joined, name, status, served, f"offline_{column}"))
    counts: dict[str, dict[str, int]] = {}
    if parts:
        union = parts[0]
        for part in parts[1:]:
            union = union.unionByName(part)
        for row in union.collect():
            counts.setdefault(row["feature"], {})[row["kind"]] = int(row["count"])
    return counts


def rates(counts: dict[str, int]) -> dict:
    """The Chronon-style rates of one feature: over the pairs where either side has a value."""
    compared = sum(counts.get(k, 0) for k in ("match", "mismatch", "missing", "extra"))
    out = {k: counts.get(k, 0) for k in ("match", "mismatch", "missing", "extra", "stale", "future", "absent")}
    for k in ("mismatch", "missing", "extra"):
        out[f"{k}_rate"] = out[k] / compared if compared else 0.0
    out["compared"] = compared
    return out


def served_values(log: DataFrame) -> dict[str, DataFrame]:
    """Each drift feature's served values (present ones only), as one column ``v``."""
    users, items = served_users(log), served_items(log)
    out = {c: users.filter(F.col("user_stats_status") == "present").select(F.col(c).alias("v")) for c in DRIFT[:3]}
    out.update({c: items.filter(F.col("item_stats_status") == "present").select(F.col(c).alias("v")) for c in DRIFT[3:6]})
    out["hist_len"] = users.select(F.size("hist_item_ids").cast("double").alias("v"))
    out["hist_sim"] = log.select(F.explode("hist_sim").alias("row")).select(F.explode("row").alias("v")).select(
        F.col("v").cast("double").alias("v")).filter(F.col("v").isNotNull())
    return out


def training_rows(spark, training: Path) -> DataFrame:
    """The train split's rows. A set with histories by reference does not carry ``hist_sim`` (the
    loader computes it): each row's own value is read from the similarity view's table by its event key."""
    rows = spark.read.parquet(str(training / "split=train"))
    manifest = json.loads((training / "manifest.json").read_text())
    if "hist_sim" in rows.columns or not any(f.endswith(":hist_sim") for f in manifest.get("request_time_fields", [])):
        return rows
    view = next(v for v in manifest["views"] if "hist_sim" in v["fields"])
    key = ["user_id", "item_id", "event_timestamp"]
    sims = spark.read.parquet(str(Path(view["glob"]).parent)).select(*key, "hist_sim")
    return rows.join(sims, on=key, how="left")


def training_values(training: DataFrame) -> dict[str, DataFrame]:
    out = {c: training.select(F.col(c).cast("double").alias("v")).filter(F.col("v").isNotNull())
           for c in DRIFT[:6] if c in training.columns}
    if "hist_len" in training.columns:
        out["hist_len"] = training.select(F.col("hist_len").cast("double").alias("v"))
    if "hist_sim" in training.columns:
        out["hist_sim"] = training.select(F.explode("hist_sim").alias("v")).select(F.col("v").cast("double").alias("v")).filter(
            F.col("v").isNotNull())
    return out


def histogram(values: DataFrame, edges: list[float]) -> list[int]:
    """Counts in the bins (-inf, e1), [e1, e2), ..., [ek, inf)."""
    index = sum((F.when(F.col("v") >= e, 1).otherwise(0) for e in edges), F.lit(0))
    counted = {r["b"]: r["count"] for r in values.select(index.alias("b")).groupBy("b").count().collect()}
    return [int(counted.get(b, 0)) for b in range(len(edges) + 1)]


def psi(expected: list[int], actual: list[int]) -> float:
    """Population stability index of ``actual`` against ``expected`` (bin counts)."""
    import math

    n_e, n_a = sum(expected) or 1, sum(actual) or 1
    total = 0.0
    for e, a in zip(expected, actual):
        p, q = max(e / n_e, PSI_EPS), max(a / n_a, PSI_EPS)
        total += (q - p) * math.log(q / p)
    return total


def drift(training: DataFrame, log: DataFrame) -> dict[str, dict]:
    """{feature: {"psi", "train_n", "served_n", "edges"}} over ``BINS`` quantile bins of the training values."""
    trained, served = training_values(training), served_values(log)
    out = {}
    for name in DRIFT:
        if name not in trained:
            continue
        clean = lambda df: df.filter(F.col("v").isNotNull() & ~F.isnan("v"))  # noqa: E731 - unknown s_j are NaN in training rows
        trained[name], served[name] = clean(trained[name]), clean(served[name])
        quantiles = trained[name].approxQuantile("v", [i / BINS for i in range(1, BINS)], 1e-3)
        edges = sorted(set(quantiles))
        expected, actual = histogram(trained[name], edges), histogram(served[name], edges)
        if sum(actual) == 0:
            continue
        out[name] = {"psi": psi(expected, actual), "train_n": sum(expected), "served_n": sum(actual), "edges": edges}
    return out


def report(counts: dict, drifted: dict, requests: int, thresholds: dict) -> dict:
    features = {name: rates(c) for name, c in sorted(counts.items())}
    failures = [f"{name}: {k}_rate {r[f'{k}_rate']:.4f} > {thresholds[f'max_{k}']}" for name, r in features.items()
                for k in ("mismatch", "missing", "extra") if r[f"{k}_rate"] > thresholds[f"max_{k}"]]
    for d in drifted.values():
        d["gated"] = d["served_n"] >= thresholds["min_samples"]
    failures += [f"{name}: PSI {d['psi']:.3f} > {thresholds['max_psi']}" for name, d in drifted.items()
                 if d["gated"] and d["psi"] > thresholds["max_psi"]]
    return {"requests": requests, "features": features, "drift": drifted, "thresholds": thresholds, "failures": failures,
            "passed": not failures}


def markdown(result: dict) -> str:
    lines = [f"# Served features against the offline tables\n", f"{result['requests']} logged requests.\n",
             "| feature | compared | match | mismatch rate | missing rate | extra rate | stale |", "|---|---|---|---|---|---|---|"]
    for name, r in result["features"].items():
        lines.append(f"| {name} | {r['compared']} | {r['match']} | {r['mismatch_rate']:.2%} | {r['missing_rate']:.2%} | "
                     f"{r['extra_rate']:.2%} | {r['stale']} |")
    lines += ["", "## Drift: training set against served (PSI, 10 quantile bins of the training values)\n",
              "| feature | PSI | training values | served values | judged |", "|---|---|---|---|---|"]
    for name, d in result["drift"].items():
        judged = "yes" if d["gated"] else f"no: fewer than {result['thresholds']['min_samples']} served values"
        lines.append(f"| {name} | {d['psi']:.3f} | {d['train_n']} | {d['served_n']} | {judged} |")
    t = result["thresholds"]
    lines += ["", f"Thresholds: mismatch {t['max_mismatch']}, missing {t['max_missing']}, extra {t['max_extra']}, PSI {t['max_psi']} "
              f"(judged with at least {t['min_samples']} served values).",
              "", "**passed**" if result["passed"] else "**failed**: " + "; ".join(result["failures"]), ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(result["features"])
    for n, k in enumerate(("mismatch", "missing", "extra")):
        left.barh([i + n * 0.27 for i in range(len(names))], [result["features"][f][f"{k}_rate"] for f in names], height=0.27, label=k)
    left.set_yticks(range(len(names)), names, fontsize=8)
    left.set_xlabel("rate over compared pairs")
    left.set_title("served vs offline point-in-time")
    left.legend()
    drifted = list(result["drift"])
    right.barh(drifted, [result["drift"][f]["psi"] for f in drifted])
    right.axvline(result["thresholds"]["max_psi"], color="red", linestyle="--", label="threshold")
    right.set_xlabel("PSI (training set vs served)")
    right.set_title("drift")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@job_main
def main(argv: list[str] | None = None) -> int:
    """``mmfs consistency``: 0 when every rate and PSI is within its threshold, else 1."""
    parser = argparse.ArgumentParser(prog="mmfs consistency", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the table root the scorer served from")
    parser.add_argument("--log", default="", help="the served-feature log (default <root>/_served)")
    parser.add_argument("--training-set", default="", help="the training set to measure drift against (default <root>/training_sets/<service>)")
    parser.add_argument("--out", default="", help="report folder (default <root>/reports/consistency)")
    parser.add_argument("--max-mismatch", type=float, default=0.01)
    parser.add_argument("--max-missing", type=float, default=0.01)
    parser.add_argument("--max-extra", type=float, default=0.01)
    parser.add_argument("--max-psi", type=float, default=0.25)
    parser.add_argument("--min-samples", type=int, default=100,
                        help="a feature's PSI is judged only with at least this many served values (default %(default)s)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    root = Path(args.root)
    spark = spark_from_args(args, "mmfs-consistency")
    log_dir = Path(args.log) if args.log else root / REQUEST_LOG_SUBDIR
    if not any(log_dir.glob("*.parquet")):
        raise SystemExit(f"mmfs consistency: no served-feature log under {log_dir}: serve some requests first")
    log = spark.read.parquet(str(log_dir)).persist()
    requests = log.count()
    tables = {t: read_table(spark, str(root / t)) for t in ("user_sequence_snapshots", "user_stats", "item_stats") if (root / t).is_dir()}
    counts = consistency_counts(log, tables)
    service = log.select("feature_service").first()["feature_service"]
    training = Path(args.training_set) if args.training_set else root / "training_sets" / service
    drifted = drift(training_rows(spark, training), log) if (training / "split=train").is_dir() else {}
    thresholds = {"max_mismatch": args.max_mismatch, "max_missing": args.max_missing, "max_extra": args.max_extra, "max_psi": args.max_psi,
                  "min_samples": args.min_samples}
    result = report(counts, drifted, requests, thresholds)
    out = Path(args.out) if args.out else root / "reports" / "consistency"
    out.mkdir(parents=True, exist_ok=True)
    (out / "consistency.json").write_text(json.dumps(result, indent=2))
    (out / "consistency.md").write_text(markdown(result))
    plot(result, out / "consistency.png")
    print(markdown(result))
    print(f"mmfs consistency: wrote {out}/consistency.{{json,md,png}}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

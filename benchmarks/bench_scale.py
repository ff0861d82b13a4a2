"""End-to-end scale run (``make bench-scale``): synthetic events -> Spark jobs -> Feast -> training
set -> DMF (bounded steps) -> materialise to Redis -> scorer, at several sizes, each stage timed.

    python -m benchmarks.bench_scale --sizes 1000000,3000000,10000000

A size of E events has E/10 users and E/100 items (10M events: 1M users, 100k items). Every item's
text is encoded with the packaged MiniLM; images (EfficientNet-Lite0) go on a sample of
``--images`` items, because on CPU image encoding runs at ~20 img/s.

Every stage is its own process (a fresh Spark JVM each, as ``spark-submit`` would run it), measured
from here: wall time, peak resident memory of the whole process tree (Python, JVM, Python
workers), and the disk its output takes. Results are appended to ``bench_out/scale/results.jsonl``
as each stage ends (a long run can be stopped and resumed with ``--resume``), and
``docs/scaling.md`` + ``docs/scaling.png`` are rewritten from all recorded rows.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.resources import machine_description, measured
from mmfs.store.repo import init_repo

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench_out" / "scale"
REPORT = ROOT / "docs" / "scaling.md"
MMFS = [sys.executable, "-m", "mmfs.cli"]
NOTES_MARKER = "<!-- notes below this line are kept when bench_scale rewrites the tables above -->"
STAGES = ("synth", "ingest", "encode_items", "user_sequences", "item_stats", "user_stats", "target_similarity", "feast_apply",
          "training_set", "train_dmf", "materialize_redis_feast", "materialize_redis_spark", "score")
EVAL_BATCHES = 100  # validation and test: their first 100 batches of 1024 rows
GOAL_EVENTS, GOAL_SECONDS = 10_000_000, 15 * 60  # 10M events through every stage in 15 min


def du(*paths: Path) -> int:
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return total


def parquet_rows(path: Path) -> int:
    import duckdb

    return duckdb.connect().execute(f"select count(*) from read_parquet('{path}/**/*.parquet')").fetchone()[0]


def run_logged(cmd: list[str], log: Path, env: dict | None = None) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"stage failed ({done.returncode}): {' '.join(cmd)}; see {log}")


def prepare_repo(work: Path, port: int, name: str = "feature_repo") -> Path:
    repo = work / name / "feature_repo"
    shutil.rmtree(repo, ignore_errors=True)
    init_repo(repo)
    path = repo / "feature_store.redis.yaml"
    path.write_text(path.read_text().replace("127.0.0.1:6379", f"127.0.0.1:{port}"))
    return repo


def stage_plan(events: int, work: Path, images: int, train_steps: int, repo: Path, feast_repo: Path) -> list[tuple[str, list[list[str]], callable, callable]]:
    """(stage, commands, rows(), output paths()) for one size."""
    raw, root = work / "raw", work / "root"
    users, items = events // 10, events // 100
    r = str(root)
    return [
        ("synth", [MMFS + ["synth", "--out", str(raw), "--users", str(users), "--items", str(items), "--events", str(events),
                           "--images", str(images), "--seed", "11", "--distinct-texts"]],
         lambda: events, lambda: [raw]),
        ("ingest", [MMFS + ["ingest", "--source", "files", "--items", f"{raw}/items.parquet", "--events", f"{raw}/events.parquet", "--out", r]],
         lambda: events, lambda: [root / "items", root / "events", root / "quarantine"]),
        ("encode_items", [MMFS + ["encode-items", "--root", r]], lambda: items, lambda: [root / "item_embeddings"]),
        ("user_sequences", [MMFS + ["user-sequences", "--root", r]], lambda: events,
         lambda: [root / "sequences", root / "user_sequence_snapshots", root / "user_sequence_current"]),
        ("item_stats", [MMFS + ["item-stats", "--root", r]], lambda: events, lambda: [root / "item_stats"]),
        ("user_stats", [MMFS + ["user-stats", "--root", r]], lambda: events, lambda: [root / "user_stats"]),
        ("target_similarity", [MMFS + ["target-similarity", "--root", r]], lambda: events, lambda: [root / "target_similarity"]),
        ("feast_apply", [MMFS + ["apply", "--root", r, "--config", "spark", "--repo", str(repo)],
                         MMFS + ["apply", "--root", r, "--config", "redis", "--repo", str(repo)],
                         MMFS + ["apply", "--root", r, "--config", "redis", "--repo", str(feast_repo)]],
         lambda: 0, lambda: [repo / "data"]),
        ("training_set", [MMFS + ["training-set", "--root", r, "--service", "ctr_dmf_v1", "--config", "redis", "--repo", str(repo)]],
         lambda: parquet_rows(root / "training_sets" / "ctr_dmf_v1"), lambda: [root / "training_sets"]),
        ("train_dmf", [MMFS + ["train", "--model", "dmf", "--training-set", f"{r}/training_sets/ctr_dmf_v1", "--out", f"{r}/models/dmf",
                               "--max_epochs=1", f"--max_steps_per_epoch={train_steps}", f"--max_eval_batches={EVAL_BATCHES}"]],
         lambda: train_steps * 1024,
         lambda: [root / "models"]),
        # Feast's own materialisation, and ours (partition-wise), each into its own Redis server.
        ("materialize_redis_feast", [MMFS + ["materialize", "--root", r, "--config", "redis", "--repo", str(feast_repo),
                                             "--end", "2025-01-01T00:00:00Z"]],
         lambda: parquet_rows(root / "user_sequence_current") + 2 * items, lambda: []),
        ("materialize_redis_spark", [MMFS + ["materialize", "--root", r, "--config", "redis", "--repo", str(repo),
                                             "--end", "2025-01-01T00:00:00Z", "--engine", "spark"]],
         lambda: parquet_rows(root / "user_sequence_current") + 2 * items, lambda: []),
        ("score", [[sys.executable, "-m", "benchmarks.bench_scale", "score", "--root", r, "--repo", str(repo)]],
         lambda: json.loads((work / "score.json").read_text())["requests"], lambda: []),
    ]


def score_main(argv: list[str]) -> int:
    """Score 100 candidates for 200 users through the Redis online store; write latency figures."""
    import numpy as np

    from mmfs.store import feast_store
    from mmfs.serving.scorer import Scorer
    from mmfs.serving.tuning import tune_for_serving

    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args(argv)
    root = Path(args.root)
    import duckdb

    con = duckdb.connect()
    user_ids = [r[0] for r in con.execute(
        f"select user_id from read_parquet('{root}/user_sequence_current/*.parquet') using sample {args.users} rows (reservoir, 1)").fetchall()]
    item_ids = np.array([r[0] for r in con.execute(f"select distinct item_id from read_parquet('{root}/item_embeddings/*.parquet')").fetchall()])
    store = feast_store.open_store("redis", args.repo, root)
    scorer = Scorer.from_checkpoint(root / "models" / "dmf" / "checkpoint.pt", store)
    blas_limit = tune_for_serving()  # as mmfs serve does once loaded  # noqa: F841 - kept alive for the run
    at = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    rng = np.random.default_rng(0)
    latencies, errors = [], 0
    for user in user_ids:
        candidates = [int(i) for i in rng.choice(item_ids, 100, replace=False)]
        start = time.perf_counter()
        result = scorer.score(int(user), candidates, now=at)
        latencies.append((time.perf_counter() - start) * 1000)
        errors += sum(1 for item in result.items if item.score is None)
    warm = sorted(latencies[len(latencies) // 2:])
    out = {"requests": len(latencies), "candidates": 100, "item_errors": errors,
           "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
           "warm_p50_ms": float(np.percentile(warm, 50)), "warm_p99_ms": float(np.percentile(warm, 99))}
    (root.parent / "score.json").write_text(json.dumps(out))
    print(json.dumps(out))
    return 0


def materialize_detail_main(argv: list[str]) -> int:
    """Feast's materialisation and ours on one table root, each into a fresh Redis, with the memory
    of the largest single Python process and of the JVM apart from the tree's total."""
    from tests.support.redis_server import redis_server

    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args(argv)
    work = WORK / f"materialize_e{args.events}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "a").mkdir(parents=True)
    (work / "b").mkdir()
    log = work / "stages.log"
    with redis_server(work / "a") as feast_port, redis_server(work / "b") as spark_port:
        for engine, port, sub in (("feast", feast_port, "a"), ("spark", spark_port, "b")):
            repo = prepare_repo(work / sub, port)
            run_logged(MMFS + ["apply", "--root", args.root, "--config", "redis", "--repo", str(repo)], log)
            cmd = MMFS + ["materialize", "--root", args.root, "--config", "redis", "--repo", str(repo),
                          "--end", "2025-01-01T00:00:00Z", "--engine", engine]
            with measured(interval=0.25) as m:
                run_logged(cmd, log)
            import redis

            row = {"events": args.events, "engine": engine, "seconds": round(m.seconds, 2),
                   "peak_gib": round(m.peak_rss_bytes / 2**30, 3), "python_gib": round(m.peak_python_bytes / 2**30, 3),
                   "jvm_gib": round(m.peak_jvm_bytes / 2**30, 3),
                   "redis_mib": round(redis.Redis(host="127.0.0.1", port=port).info("memory")["used_memory"] / 2**20, 1),
                   "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            with (WORK / "materialize_detail.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    return 0


def run_size(events: int, images: int, train_steps: int, results: Path, resume: bool, only: set[str] | None = None) -> None:
    from tests.support.redis_server import redis_server

    work = WORK / f"e{events}"
    done = set()
    if resume and results.exists():
        done = {r["stage"] for r in map(json.loads, results.read_text().splitlines()) if r["events"] == events}
    elif work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "redis").mkdir(exist_ok=True)
    log = work / "stages.log"
    (work / "redis_feast").mkdir(exist_ok=True)
    with redis_server(work / "redis") as port, redis_server(work / "redis_feast") as feast_port:
        repo = prepare_repo(work, port)
        feast_repo = prepare_repo(work, feast_port, "feast_engine")
        if only:  # the other stages stay as recorded
            done = set(STAGES) - only
        elif done & {"materialize_redis_feast", "materialize_redis_spark"}:
            done -= {"materialize_redis_feast", "materialize_redis_spark", "score"}  # fresh Redis servers: their contents are gone
        for stage, commands, rows, outputs in stage_plan(events, work, images, train_steps, repo, feast_repo):
            if stage in done:
                continue
            print(f"[scale {events:,}] {stage} ...", flush=True)
            with measured(interval=0.5) as m:
                for cmd in commands:
                    run_logged(cmd, log)
            n = rows()
            row = {"events": events, "stage": stage, "seconds": round(m.seconds, 2), "rows": n,
                   "rows_s": round(n / m.seconds, 1) if n else None, "peak_gib": round(m.peak_rss_bytes / 2**30, 3),
                   "disk_mib": round(du(*outputs()) / 2**20, 1), "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            if stage == "score":
                row.update(json.loads((work / "score.json").read_text()))
            if stage.startswith("materialize_redis"):
                import redis

                used = redis.Redis(host="127.0.0.1", port=feast_port if stage.endswith("feast") else port).info("memory")["used_memory"]
                row["disk_mib"] = round(used / 2**20, 1)  # the online store's size: Redis memory
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[scale {events:,}] {stage}: {m.seconds:.1f} s, {n:,} rows, peak {row['peak_gib']:.2f} GiB, "
                  f"disk {row['disk_mib']:.0f} MiB", flush=True)


# -- report ----------------------------------------------------------------------------------------

def load_rows(results: Path) -> list[dict]:
    latest: dict[tuple, dict] = {}
    for line in results.read_text().splitlines() if results.exists() else []:
        row = json.loads(line)
        latest[(row["events"], row["stage"])] = row
    return sorted(latest.values(), key=lambda r: (r["events"], STAGES.index(r["stage"])))


def growth(rows: list[dict]) -> dict[str, float]:
    """Per stage: the log-log slope of wall time against events between the smallest and largest
    size (1.0 = linear; fixed start-up costs pull it below 1)."""
    import math

    out = {}
    for stage in STAGES:
        points = sorted((r["events"], r["seconds"]) for r in rows if r["stage"] == stage)
        if len(points) >= 2 and points[0][0] != points[-1][0]:
            (e0, s0), (e1, s1) = points[0], points[-1]
            out[stage] = math.log(s1 / s0) / math.log(e1 / e0)
    return out


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("tab20").colors
    for ax in axes:
        ax.set_prop_cycle(color=colors[: len(STAGES)])
    for stage in STAGES:
        points = sorted((r["events"], r["seconds"], r["peak_gib"]) for r in rows if r["stage"] == stage)
        if not points:
            continue
        x = [p[0] / 1e6 for p in points]
        axes[0].plot(x, [p[1] for p in points], marker="o", label=stage)
        axes[1].plot(x, [p[2] for p in points], marker="o", label=stage)
    sizes = sorted({r["events"] for r in rows})
    if len(sizes) >= 2:
        base = [r for r in rows if r["events"] == sizes[0]]
        total0 = sum(r["seconds"] for r in base)
        axes[0].plot([s / 1e6 for s in sizes], [total0 * s / sizes[0] / len(base) for s in sizes], "k--", lw=1, label="linear (mean stage)")
    axes[0].set(xscale="log", yscale="log", xlabel="events (millions)", ylabel="wall seconds", title="wall time per stage")
    axes[1].set(xscale="log", xlabel="events (millions)", ylabel="peak GiB (process tree)", title="peak memory per stage")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def once_through(rows: list[dict], size: int) -> tuple[float, str]:
    """Seconds of every stage at ``size`` with one materialisation (the faster of the two engines run), and that engine."""
    stages = {r["stage"]: r["seconds"] for r in rows if r["events"] == size}
    engines = {stage: sec for stage, sec in stages.items() if stage.startswith("materialize_redis")}
    fastest = min(engines, key=engines.get) if engines else None
    seconds = sum(sec for stage, sec in stages.items() if stage not in engines or stage == fastest)
    return seconds, (fastest or "none").removeprefix("materialize_redis_")


def write_report(rows: list[dict], machine: str) -> str:
    sizes = sorted({r["events"] for r in rows})
    slopes = growth(rows)
    lines = [
        "# Scaling: one pipeline, 1M to 10M events",
        "",
        f"Generated by `python -m benchmarks.bench_scale` ({dt.date.today()}). Machine: {machine}.",
        "Synthetic data (`mmfs synth --distinct-texts`): E events, E/10 users, E/100 items, one text per item, each encoded (MiniLM),",
        "images for a sample. Each stage is a separate process (its own Spark JVM, `local[*]`); wall time, peak",
        "resident memory of the whole process tree, and the disk the stage's output takes. Redis is a real",
        "`redis-server` on loopback; its disk column is the Redis server's used memory. Materialisation runs twice, into",
        "two servers: Feast's own engine (`feast materialize`) and ours (`mmfs materialize --engine spark`, partition-wise).",
        f"DMF trains for a bounded number of steps (batch 1024) and evaluates on the first {EVAL_BATCHES} batches of the",
        "validation and test splits; its rows are the training samples.",
        "",
        "| events | stage | wall s | rows | rows/s | peak GiB | disk MiB |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rate = f"{r['rows_s']:,.0f}" if r.get("rows_s") else "-"
        lines.append(f"| {r['events']:,} | {r['stage']} | {r['seconds']:.1f} | {r['rows']:,} | {rate} | {r['peak_gib']:.2f} | {r['disk_mib']:,.0f} |")
    for size in sizes:
        total = sum(r["seconds"] for r in rows if r["events"] == size)
        lines.append(f"| {size:,} | **all stages** | **{total:.0f}** | | | | |")
    goals = [(size, once_through(rows, size)) for size in sizes if size >= GOAL_EVENTS]
    if goals:
        lines += ["", "### Goals", "", "| goal | measured | |", "|---|---|---|"]
        for size, (seconds, engine) in goals:
            lines.append(f"| {size:,} events through every stage once (synth to score, one materialisation: the faster "
                         f"engine, {engine}) <= {GOAL_SECONDS / 60:.0f} min on this machine | {seconds / 60:.1f} min ({seconds:.0f} s) | "
                         f"{'met' if seconds <= GOAL_SECONDS else '**not met**'} |")
    scores = [r for r in rows if r["stage"] == "score"]
    if scores:
        lines += ["", "Scorer on the Redis online store (DMF checkpoint of the run; 200 sampled users, 100 candidates drawn at random from",
                  "all items per request, so most item reads miss the scorer's cache; one process):", "",
                  "| events | requests | p50 ms | p99 ms | second-half p50 ms | second-half p99 ms |", "|---:|---:|---:|---:|---:|---:|"]
        for r in scores:
            lines.append(f"| {r['events']:,} | {r['requests']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['warm_p50_ms']:.1f} | {r['warm_p99_ms']:.1f} |")
    if slopes:
        lines += ["", f"Growth: log-log slope of wall time from {sizes[0]:,} to {sizes[-1]:,} events (1.00 = linear; fixed start-up",
                  "costs of ~10 s per Spark or Feast process pull small runs' slopes below 1):", ""]
        lines += [f"- {stage}: {slope:.2f}" for stage, slope in slopes.items()]
    detail_file = WORK / "materialize_detail.jsonl"
    if detail_file.exists():
        detail = [json.loads(line) for line in detail_file.read_text().splitlines()]
        lines += ["", "Materialisation to Redis by engine, memory by process (`bench_scale materialize-detail`, same tables, each",
                  "engine into its own fresh Redis): the largest single non-JVM process is where a driver holding the",
                  "whole view shows; Spark's JVM heap is capped by `spark.driver.memory` (4g) and spills beyond.", "",
                  "| events | engine | wall s | tree peak GiB | largest Python process GiB | JVM GiB | Redis MiB |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for r in sorted(detail, key=lambda r: (r["events"], r["engine"])):
            lines.append(f"| {r['events']:,} | {r['engine']} | {r['seconds']:.1f} | {r['peak_gib']:.2f} | {r['python_gib']:.2f} | "
                         f"{r['jvm_gib']:.2f} | {r['redis_mib']:,.0f} |")
    lines += ["", "![wall time and peak memory per stage](scaling.png)", ""]
    text = "\n".join(lines) + "\n"
    current = REPORT.read_text() if REPORT.exists() else ""
    kept = current.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in current else "\n"
    REPORT.write_text(text + "\n" + NOTES_MARKER + kept)
    chart(rows, REPORT.parent / "scaling.png")
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["score"]:
        return score_main(argv[1:])
    if argv[:1] == ["materialize-detail"]:
        return materialize_detail_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,3000000,10000000", help="comma-separated event counts")
    parser.add_argument("--images", type=int, default=1000, help="items with an image (CPU: ~20 img/s)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--resume", action="store_true", help="skip stages already recorded for a size")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--stages", default="", help="comma-separated: run only these stages (with --resume; the rest stay as recorded)")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    results = WORK / "results.jsonl"
    if not args.report_only:
        for events in [int(s) for s in args.sizes.split(",")]:
            run_size(events, args.images, args.train_steps, results, args.resume or bool(args.stages),
                     set(args.stages.split(",")) - {""} or None)
    print(write_report(load_rows(results), machine_description()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

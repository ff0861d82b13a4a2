"""Streaming benchmark (``make bench-stream``): freshness, sustained events/s, logging overhead.

On a copy of the MovieLens tables ``make demo`` writes (applied and materialised to AS_OF):

- freshness: ``mmfs stream --trigger-s T`` (``--trigger-s``, default the stream's own) runs in its own
  process; one click at a time lands in the event log (``mmfs.core.events.landing``) and the time
  until the online store serves the user's new sequence (the read the scorer makes, polled every
  10 ms) is measured, p50 and p99;
- sustained: events land at a fixed rate (files every 0.2 s) for a while at each of 10, 100, 1,000
  events/s and up; per micro-batch, the time from its oldest file landing to its rows being
  visible, p50/p99, and whether the stream kept up. The highest sustainable rate is the highest one
  that kept up with p99 <= 1 s (the goal), and the highest that kept up at all is reported too;
- the generator (this process: it builds, checks and lands the events, and polls for freshness) is
  pinned to one core (``--generator-cpu``); the stream is not pinned. The CPU seconds each used at
  each rate are read from ``/proc`` and reported, so the stream's cost is apart from the generator's;
- served-feature logging: in-process ``Scorer.score`` at C = 100, with and without the request log,
  interleaved request by request, p50/p99 and the ratio;
- ``mmfs consistency`` over the requests that run logged, against the tables after the stream
  ran (the stream's rows included), and its wall time.

Writes docs/streaming.md (the machine described) and docs/stream_freshness.png.
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

import numpy as np

from benchmarks.resources import machine_description
from mmfs.store import feast_store
from mmfs.store.feast_store import parse_time
from mmfs.core.events.landing import Event, EventLanding
from mmfs.store.repo import init_repo

ROOT = Path(__file__).resolve().parents[1]
UTC = dt.timezone.utc
SKIP = ("training_sets", "models", "encoder_cache", "_served", "_landing", "_stream", "reports", "quarantine", "_feast")
GOAL_P99_S = 1.0  # freshness: event landed -> servable
GOAL_RATE = 1000  # events/s at which GOAL_P99_S must hold


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def prepare(root: Path, work: Path, at: dt.datetime) -> tuple[Path, Path]:
    """A copy of the tables and the repo, applied and materialised up to ``at``."""
    tables = work / "tables"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(root, tables, ignore=lambda d, names: [n for n in names if Path(d) == root and n in SKIP])
    repo = work / "feature_repo"
    init_repo(repo)
    feast_store.apply("duckdb", repo, tables)
    feast_store.materialize("duckdb", repo, tables, end=at)
    return tables, repo


def users_and_items(tables: Path) -> tuple[list[int], list[int]]:
    import duckdb

    con = duckdb.connect()
    users = [r[0] for r in con.execute(f"SELECT DISTINCT user_id FROM read_parquet('{tables}/user_sequence_snapshots/*.parquet') ORDER BY 1").fetchall()]
    items = [r[0] for r in con.execute(f"SELECT DISTINCT item_id FROM read_parquet('{tables}/items/*.parquet') ORDER BY 1").fetchall()]
    return users, items


class Clock:
    """Event times after everything in the tables, strictly increasing (nothing is late)."""

    def __init__(self, start: dt.datetime):
        self.t = start

    def next(self) -> dt.datetime:
        self.t += dt.timedelta(milliseconds=1)
        return self.t


def wait_visible(reader, user: int, ts: dt.datetime, timeout: float, poll: float = 0.01) -> float | None:
    """Poll the online store until ``user``'s sequence holds the click at ``ts``; the time it became visible."""
    want = int((ts - dt.datetime(1970, 1, 1, tzinfo=UTC)) / dt.timedelta(microseconds=1))
    end = time.time() + timeout
    far = dt.datetime(2100, 1, 1, tzinfo=UTC)
    while time.time() < end:
        row = reader.read("user_sequence", [user], now=far)
        stamps = row.values["hist_ts_us"][0] or []
        if want in stamps:
            return time.time()
        time.sleep(poll)
    return None


def stream_default_trigger() -> float:
    from mmfs.streaming.job import DEFAULT_TRIGGER_S

    return DEFAULT_TRIGGER_S


def start_stream(tables: Path, repo: Path, trigger_s: float | None, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    trigger = ["--trigger-s", str(trigger_s)] if trigger_s else []
    return subprocess.Popen([sys.executable, "-m", "mmfs.cli", "stream", "--root", str(tables), "--repo", str(repo),
                             *trigger, "--conf", "spark.ui.enabled=false"],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (the stream's JVM and Python), from /proc."""
    import psutil

    total = 0.0
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (every process), from /proc/stat."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def batches(tables: Path) -> list[dict]:
    path = tables / "_stream" / "batches.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def bench_freshness(tables: Path, repo: Path, users: list[int], items: list[int], clock: Clock, n: int, rng) -> dict:
    from mmfs.online.reader import OnlineReader

    reader = OnlineReader(feast_store.open_store("duckdb", repo, tables), "ctr_dmf_v1")
    landing = EventLanding(tables)
    latencies = []
    for _ in range(n):
        user, item, ts = int(rng.choice(users)), int(rng.choice(items)), clock.next()
        began = time.time()
        landing.land([Event(user, item, ts, 1)])
        seen = wait_visible(reader, user, ts, timeout=60)
        if seen is None:
            raise SystemExit(f"a click of user {user} at {ts} was not visible after 60 s")
        latencies.append(seen - began)
        time.sleep(float(rng.uniform(0, 1.0)))  # land at a random phase of the trigger
    return {"n": n, "p50_s": pct(latencies, 50), "p99_s": pct(latencies, 99), "max_s": max(latencies), "latencies": latencies}


def bench_sustained(tables: Path, users: list[int], items: list[int], clock: Clock, rate: int, seconds: float, rng,
                    stream_pid: int) -> dict:
    landing = EventLanding(tables)
    before = len(batches(tables))
    landed = sum(b["events"] for b in batches(tables))
    cpu_stream, cpu_gen, cpu_all = cpu_seconds(stream_pid), own_cpu_seconds(), busy_cpu_seconds()
    cpu_gen_start = cpu_gen
    per_file = max(1, int(rate * 0.2))
    files = int(seconds / 0.2)
    began = time.time()
    for k in range(files):
        due = began + k * 0.2
        if time.time() < due:
            time.sleep(due - time.time())
        landing.land([Event(int(rng.choice(users)), int(rng.choice(items)), clock.next(), int(rng.random() < 0.5))
                      for _ in range(per_file)])
    last_landed = time.time()
    cpu_gen = own_cpu_seconds() - cpu_gen
    want = landed + files * per_file
    while sum(b["events"] for b in batches(tables)) < want and time.time() - last_landed < 120:
        time.sleep(0.1)
    mine = batches(tables)[before:]
    lat = [b["visible"] - b["landed_min"] for b in mine if b.get("landed_min")]
    drained = time.time() - last_landed
    applied = sum(b["events"] for b in mine)
    cpu_stream = cpu_seconds(stream_pid) - cpu_stream
    cpu_all = busy_cpu_seconds() - cpu_all
    wall = time.time() - began
    return {"rate": rate, "offered_events_s": files * per_file / (last_landed - began), "seconds": seconds, "events": files * per_file,
            "applied": applied, "batches": len(mine), "p50_s": pct(lat, 50), "p99_s": pct(lat, 99),
            "drain_s": drained, "kept_up": applied == files * per_file and drained < 5.0,
            "batch_s_p50": pct([b["visible"] - b["started"] for b in mine], 50),
            "stream_cpu_s_per_s": cpu_stream / wall, "generator_cpu_s_per_s": cpu_gen / (last_landed - began),
            "other_cpu_s_per_s": max(0.0, (cpu_all - cpu_stream - own_cpu_seconds() + cpu_gen_start) / wall)}


def bench_logging(tables: Path, repo: Path, checkpoint: Path, at: dt.datetime, n: int, rng) -> dict:
    """In-process scoring with and without the request log, interleaved."""
    import torch

    from mmfs.serving.request_log import RequestLog
    from mmfs.serving.scorer import Scorer

    torch.set_num_threads(1)
    store = feast_store.open_store("duckdb", repo, tables)
    scorer = Scorer.from_checkpoint(checkpoint, store)
    users, items = users_and_items(tables)
    requests = [(int(rng.choice(users)), [int(i) for i in rng.choice(items, 100, replace=False)]) for _ in range(50)]
    log = RequestLog(tables / "_served", scorer, maxsize=10_000)
    hook = scorer.served_hook
    times = {"off": [], "on": []}
    for k in range(5):  # warm
        scorer.score(*requests[k], now=at)
    for k in range(n):
        user, cands = requests[k % len(requests)]
        for mode in (("off", "on") if k % 2 == 0 else ("on", "off")):
            scorer.served_hook = hook if mode == "on" else None
            began = time.perf_counter()
            scorer.score(user, cands, now=at)
            times[mode].append(time.perf_counter() - began)
    log.close()
    out = {mode: {"p50_ms": pct(t, 50) * 1e3, "p99_ms": pct(t, 99) * 1e3} for mode, t in times.items()}
    out.update({"n": n, "written": log.written, "dropped": log.dropped, "files": log.files,
                "p99_ratio": out["on"]["p99_ms"] / out["off"]["p99_ms"], "p50_ratio": out["on"]["p50_ms"] / out["off"]["p50_ms"]})
    return out


def run_consistency(tables: Path, work: Path, training_set: Path) -> dict:
    """``mmfs consistency`` over the logged requests, in its own process; its report and wall time."""
    began = time.time()
    done = subprocess.run([sys.executable, "-m", "mmfs.cli", "consistency", "--root", str(tables), "--out", str(work / "consistency"),
                           "--training-set", str(training_set),
                           "--max-psi", "5", "--conf", "spark.ui.enabled=false"], env=dict(os.environ),
                          capture_output=True, text=True)
    out = json.loads((work / "consistency" / "consistency.json").read_text())
    out.update({"wall_s": time.time() - began, "exit": done.returncode})
    return out


def plot(fresh: dict, sustained: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    lat = np.sort(fresh["latencies"])
    left.plot(lat, np.arange(1, len(lat) + 1) / len(lat))
    left.axvline(GOAL_P99_S, color="red", linestyle="--", label=f"goal: p99 <= {GOAL_P99_S:g} s")
    left.set_xlabel("event landed -> online sequence served (s)")
    left.set_ylabel("fraction of events")
    left.set_title("freshness of single clicks")
    left.legend()
    rates = [s["offered_events_s"] for s in sustained]
    right.plot(rates, [s["p50_s"] for s in sustained], "o-", label="p50")
    right.plot(rates, [s["p99_s"] for s in sustained], "o-", label="p99")
    right.axhline(GOAL_P99_S, color="red", linestyle="--")
    right.set_xscale("log")
    right.set_xlabel("events/s landed")
    right.set_ylabel("oldest file landed -> batch visible (s)")
    right.set_title("latency under sustained load")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(r: dict) -> str:
    f, lg = r["freshness"], r["logging"]
    ok = lambda b: "met" if b else "**not met**"  # noqa: E731
    kept = [s for s in r["sustained"] if s["kept_up"]]
    fresh = [s for s in kept if s["p99_s"] <= GOAL_P99_S]
    best = max((s["offered_events_s"] for s in fresh), default=0.0)
    most = max((s["offered_events_s"] for s in kept), default=0.0)
    at_goal = [s for s in r["sustained"] if s["rate"] >= GOAL_RATE]
    goal_row = min(at_goal, key=lambda s: s["rate"]) if at_goal else None
    goal_met = goal_row is not None and goal_row["kept_up"] and goal_row["p99_s"] <= GOAL_P99_S and goal_row["offered_events_s"] >= 0.95 * GOAL_RATE
    trigger = r.get("trigger_s", 1.0)
    lines = ["# Streaming: freshness, throughput, served-feature logging", "",
             f"Generated by `make bench-stream` on {r['date']}. Machine: {r['machine']}. The stream: `mmfs stream "
             f"--trigger-s {trigger:g}`, its own process, not pinned; the generator: this benchmark's process, pinned to core "
             f"{r.get('generator_cpu', '?')} of {r.get('cpus', '?')}.", "",
             "| goal | measured | |", "|---|---|---|",
             (f"| freshness p99 <= {GOAL_P99_S:g} s at >= {GOAL_RATE:,} events/s, 1-core generator | "
              + (f"{goal_row['offered_events_s']:.0f} events/s landed: p50 {goal_row['p50_s']:.2f} s, p99 {goal_row['p99_s']:.2f} s"
                 if goal_row else "not run") + f" | {ok(goal_met)} |"),
             f"| freshness of a single click (p99 <= {GOAL_P99_S:g} s) | p50 {f['p50_s']:.2f} s, p99 {f['p99_s']:.2f} s (n = {f['n']}) | "
             f"{ok(f['p99_s'] <= GOAL_P99_S)} |",
             f"| highest sustainable events/s (kept up, p99 <= {GOAL_P99_S:g} s) | {best:.0f} events/s; kept up at all: {most:.0f} events/s "
             f"(highest rate tried that kept up) | reported |",
             f"| request log costs <= 5% at p99 | p99 {lg['off']['p99_ms']:.2f} -> {lg['on']['p99_ms']:.2f} ms "
             f"({lg['p99_ratio']:.3f}x), p50 {lg['p50_ratio']:.3f}x; {lg['written']} written, {lg['dropped']} dropped | "
             f"{ok(lg['p99_ratio'] <= 1.05)} |", "",
             "## Freshness", "",
             "One click lands in the event log (a JSON-lines file, published by a rename); `mmfs stream` (Spark Structured "
             f"Streaming, file source, `--trigger-s {trigger:g}`, its own process) applies it; the time is until the online store "
             "serves the user's new sequence (polled every 10 ms, the read the scorer makes). Clicks land one at a time at "
             "a random phase of the trigger.", "",
             "## Sustained load", "",
             "| events/s landed | events | micro-batches | p50 (s) | p99 (s) | batch time p50 (s) | drained after (s) | kept up "
             "| stream CPU (cores) | generator CPU (cores) | anything else (cores) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["sustained"]:
        lines.append(f"| {s['offered_events_s']:.0f} | {s['events']} | {s['batches']} | {s['p50_s']:.2f} | {s['p99_s']:.2f} | "
                     f"{s['batch_s_p50']:.2f} | {s['drain_s']:.1f} | {'yes' if s['kept_up'] else 'no'} | "
                     f"{s.get('stream_cpu_s_per_s', float('nan')):.2f} | {s.get('generator_cpu_s_per_s', float('nan')):.2f} | "
                     f"{s.get('other_cpu_s_per_s', float('nan')):.2f} |")
    lines += ["", "Latency here is per micro-batch: from its oldest file's landing (modification time) to its rows being "
              "published (after the online write), so it bounds what the scorer waits. Events land in 5 files a second. "
              "CPU is in cores (CPU seconds per second): the stream's JVM and Python together, and the generator's own "
              "process, pinned to one core, so a rate it could not offer shows as fewer events/s landed than asked. \"Anything "
              "else\" is the rest of the machine's busy time over the same span (from /proc/stat): other work sharing the 2 cores.", "",
             "## Served-feature logging", "",
              f"In-process `Scorer.score`, C = 100, {lg['n']} requests each way, interleaved request by request: "
              f"off p50 {lg['off']['p50_ms']:.2f} / p99 {lg['off']['p99_ms']:.2f} ms, on p50 {lg['on']['p50_ms']:.2f} / "
              f"p99 {lg['on']['p99_ms']:.2f} ms. The request thread only queues references to the arrays it used; a "
              "writer thread converts and writes parquet every 512 records or second.", "",
              "![freshness](stream_freshness.png)", ""]
    c = r.get("consistency")
    if c:
        lines += ["## Served against offline (`mmfs consistency`)", "",
                  f"The {c['requests']} logged requests above (C = 100, as of {r['at']}), checked after the stream ran, against the "
                  f"offline point-in-time values: {c['wall_s']:.0f} s wall time with Spark's start, exit status {c['exit']}.", "",
                  "| feature | compared | mismatch | missing | extra |", "|---|---|---|---|---|"]
        for name, f in c["features"].items():
            lines.append(f"| {name} | {f['compared']} | {f['mismatch_rate']:.2%} | {f['missing_rate']:.2%} | {f['extra_rate']:.2%} |")
        lines += ["", f"A sequence scored stale (older than the view's 10-year TTL at the request's time) is not used, online as "
                  f"in the training join: counted apart ({c['features'].get('user_sequence:hist_item_ids', {}).get('stale', 0)} "
                  "requests), not as missing.", "",
                  "| drift feature | PSI (training set vs served) | served values |", "|---|---|---|"]
        for name, d in c["drift"].items():
            lines.append(f"| {name} | {d['psi']:.3f} | {d['served_n']} |")
        lines += ["", "The running counts drift for real: the requests score random catalogue items as of 2018-10-01, the "
                  "training rows are every rating since 1996.", ""]
    lines += ["## Stream = batch", "",
              "`tests/streaming/test_stream.py` (in `make test`, on real files, Spark and the SQLite online store): after a "
              "run killed with SIGKILL after the online write of its second micro-batch and restarted, the `events`, "
              "`sequences`, `user_sequence_snapshots`, `item_stats`, `user_stats` and `target_similarity` tables equal a full "
              "batch recompute row for row, and the online sequence and stats of every user and item equal the batch's "
              "newest rows (`make test-all` also kills after the commit and mid-publish). A day of MovieLens "
              "(2015-11-14: 292 events of 7 users, 4,701 events with their history, many in the same second) landed hour by "
              "hour and streamed equals the batch the same way. On the standalone cluster (`tests/support/spark_cluster.py`: "
              "`--master spark://...`, the root given as a `file://` URI, the driver started in another folder) the stream "
              "writes everything through Hadoop's FileSystem API and equals the batch the same way.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(ROOT / "out" / "movielens"))
    parser.add_argument("--at", type=parse_time, default=parse_time("2018-10-01T00:00:00Z"))
    parser.add_argument("--work", default=str(ROOT / "bench_out" / "stream"))
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--rates", default="10,100,1000,2000,4000,8000")
    parser.add_argument("--trigger-s", type=float, default=None, help="the stream's --trigger-s (default: its own default)")
    parser.add_argument("--generator-cpu", type=int, default=-1, help="the core the generator is pinned to (default the last)")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--log-requests", type=int, default=400)
    parser.add_argument("--report", default=str(ROOT / "docs" / "streaming.md"))
    args = parser.parse_args(argv)
    root, work = Path(args.root), Path(args.work)
    if not (root / "user_sequence_snapshots").exists():
        raise SystemExit(f"{root} has no tables: run `make demo` first")
    rng = np.random.default_rng(0)
    print("preparing a copy of the tables ...", flush=True)
    tables, repo = prepare(root, work, args.at)
    users, items = users_and_items(tables)
    clock = Clock(args.at + dt.timedelta(days=1))
    result = {"machine": machine_description(), "date": dt.date.today().isoformat(), "at": args.at.isoformat()}
    print("logging overhead ...", flush=True)
    result["logging"] = bench_logging(tables, repo, root / "models" / "dmf" / "checkpoint.pt", args.at, args.log_requests, rng)
    print(json.dumps(result["logging"]), flush=True)
    stream = start_stream(tables, repo, args.trigger_s, work / "stream.log")
    cpus = sorted(os.sched_getaffinity(0))
    generator_cpu = cpus[args.generator_cpu]
    os.sched_setaffinity(0, {generator_cpu})  # the stream, started before, keeps every core
    result["generator_cpu"], result["cpus"] = generator_cpu, len(cpus)
    result["trigger_s"] = args.trigger_s or stream_default_trigger()
    try:
        from mmfs.online.reader import OnlineReader

        reader = OnlineReader(feast_store.open_store("duckdb", repo, tables), "ctr_dmf_v1")
        user, ts = users[0], clock.next()
        EventLanding(tables).land([Event(user, items[0], ts, 1)])
        if wait_visible(reader, user, ts, timeout=240) is None:
            raise SystemExit(f"the stream did not apply the warm-up event (see {work / 'stream.log'})")
        print("freshness ...", flush=True)
        result["freshness"] = bench_freshness(tables, repo, users, items, clock, args.clicks, rng)
        print({k: v for k, v in result["freshness"].items() if k != "latencies"}, flush=True)
        result["sustained"] = []
        for rate in (int(x) for x in args.rates.split(",")):
            print(f"sustained {rate} events/s ...", flush=True)
            result["sustained"].append(bench_sustained(tables, users, items, clock, rate, args.seconds, rng, stream.pid))
            print(result["sustained"][-1], flush=True)
            if not result["sustained"][-1]["kept_up"]:
                break
    finally:
        stream.terminate()
        stream.wait(timeout=60)
        os.sched_setaffinity(0, set(cpus))
    print("consistency ...", flush=True)
    result["consistency"] = run_consistency(tables, work, root / "training_sets" / "ctr_dmf_v1")
    report = Path(args.report)
    (work / "stream_bench.json").write_text(json.dumps(result, indent=2))
    report.write_text(markdown(result))
    plot(result["freshness"], result["sustained"], report.parent / "stream_freshness.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

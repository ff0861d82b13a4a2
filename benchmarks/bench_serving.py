"""Online scoring benchmark (``make bench-serving``, part of ``make bench``).

On the MovieLens tables and the DMF checkpoint that ``make demo`` writes (trained here if absent),
with the online store materialised up to AS_OF, for one real user with a 50-item history:

- in-process ``Scorer.score`` p50/p99/QPS for C in {1, 100, 500, 1200} candidates, with the item
  cache warm and disabled (every request reads every item from the online store), and the bare
  model forward on the same tensors already in memory (the floor);
- the same request through Feast's standard ``get_online_features`` for the same features, then
  the same similarity, tensors and forward; the speed-up is measured side by side;
- DMF's decoupled path against early fusion at C = 1200 with sequence lengths 50 and 200
  (random weights: speed only), with the time split into per-user and per-candidate work;
- the forward-only ceiling of the machine's cores (``benchmarks/serving_peers.py``);
- HTTP: ``mmfs serve`` with 1 worker and one per core, in a subprocess, a load generator in a
  second process on loopback (fixed concurrency, request count and time limit; pre-encoded
  requests on keep-alive connections), client-side p50/p99, errors and 503s, server RSS;
  ``feast serve`` on the same repo returning the same features (pre-computed on Redis), 1 user +
  C items per request;
- CPU per request, side by side: the in-process scorer's process CPU time against the server
  process tree's (/proc utime + stime) at C in {1, 100, 1200}, for both /score answer shapes
  (``--only-cpu`` runs just this part);
- the in-process figures again with a real redis-server as the online store.

The goals and their ratios, met or not, head the section (``benchmarks/serving_report.py``).

Writes the "Online scoring" section of docs/benchmarks.md and docs/serving_latency.png.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.resources import machine_description, write_section
from benchmarks.serving_report import END, SECTION, chart, section
from mmfs.store import feast_store
from mmfs.store.feast_store import parse_time
from mmfs.store.repo import init_repo

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1, 100, 500, 1200)


def percentiles(seconds: list[float]) -> dict:
    a = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()),
            "qps": float(1e3 / a.mean()), "n": len(a)}


def timed(fn, n: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        began = time.perf_counter()
        fn()
        out.append(time.perf_counter() - began)
    return percentiles(out)


def repeats(C: int, base: int) -> int:
    return max(30, base // max(1, C // 100))


# -- set-up ----------------------------------------------------------------------------------------

def prepare_store(work: Path, root: Path, config: str = "duckdb", port: int | None = None) -> Path:
    """A copy of the repo with the benchmark's Feast services (pre-computed on Redis), applied over ``root``."""
    from benchmarks.serving_peers import add_bench_services

    repo = work / f"repo_{config}" / "feature_repo"
    shutil.rmtree(repo.parent, ignore_errors=True)
    init_repo(repo)
    add_bench_services(repo, precompute=config == "redis")
    if port is not None:
        path = repo / "feature_store.redis.yaml"
        path.write_text(path.read_text().replace("127.0.0.1:6379", f"127.0.0.1:{port}"))
    feast_store.apply(config, repo, root)
    return repo


def pick_user_and_items(root: Path, at: dt.datetime, max_c: int, seed: int = 0) -> tuple[int, list[int]]:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    user = con.execute(f"""SELECT user_id FROM read_parquet('{root}/user_sequence_snapshots/*.parquet')
                           WHERE event_timestamp <= '{at.isoformat()}'::TIMESTAMPTZ AND hist_len >= 50
                           GROUP BY user_id ORDER BY max(event_timestamp) DESC, user_id LIMIT 1""").fetchone()[0]
    items = [r[0] for r in con.execute(f"SELECT DISTINCT item_id FROM read_parquet('{root}/item_embeddings/*.parquet') ORDER BY 1").fetchall()]
    rng = np.random.default_rng(seed)
    return int(user), [int(i) for i in rng.choice(items, size=min(max_c, len(items)), replace=False)]


def feast_request(store, scorer, user: int, items: list[int], at: dt.datetime):
    """The same request through Feast's standard get_online_features path, then our scoring."""
    from mmfs.online.columns import ItemRows
    from mmfs.online.reader import MISSING, MISSING_US, PRESENT, stamp_us

    seq = store.get_online_features(features=["user_sequence:hist_item_ids"], entity_rows=[{"user_id": user}]).to_dict()
    hist = [int(x) for x in (seq["hist_item_ids"][0] or [])][-scorer.max_len:]
    ids = items + hist
    feats = store.get_online_features(features=["item_embeddings:mm_emb", "item_stats:impressions", "item_stats:clicks", "item_stats:ctr"],
                                      entity_rows=[{"item_id": i} for i in ids]).to_dict()
    D = scorer.dims["mm_emb"]
    found = np.array([v is not None and len(v) == D for v in feats["mm_emb"]])
    vectors = np.zeros((len(ids), D), np.float32)
    if found.any():
        vectors[found] = np.array([v for v, f in zip(feats["mm_emb"], found) if f], np.float32)
    known = np.array([v is not None for v in feats["impressions"]])
    now = stamp_us(at)  # Feast's answer carries no event times: fresh wherever present
    stats = ItemRows({k: np.array([v or 0 for v in feats[k]], np.float64) for k in ("impressions", "clicks", "ctr")},
                     {k: known for k in ("impressions", "clicks", "ctr")}, np.where(known, now, MISSING_US))
    rows = {"item_embeddings": ItemRows({"mm_emb": vectors}, {"mm_emb": found}, np.where(found, now, MISSING_US)), "item_stats": stats}
    prepared = scorer.prepare(items, PRESENT if seq["hist_item_ids"][0] is not None else MISSING, hist, rows, at)
    with torch.inference_mode():
        return scorer.forward(prepared.tensors, len(items))[0]


def bench_in_process(store, checkpoint: Path, user: int, items: list[int], at: dt.datetime, base: int, with_feast: bool) -> list[dict]:
    from mmfs.serving.scorer import Scorer, ScorerConfig
    from mmfs.serving.tuning import tune_for_serving

    warm = Scorer.from_checkpoint(checkpoint, store)
    per_request = Scorer.from_checkpoint(checkpoint, store, ScorerConfig(user_cache_size=0))  # warm items, user side each time
    cold = Scorer.from_checkpoint(checkpoint, store, ScorerConfig(item_cache_size=0, user_cache_size=0))
    blas_limit = tune_for_serving()  # as mmfs serve does once loaded  # noqa: F841 - kept alive for the run
    rows = []
    for C in SIZES:
        cands = items[:C]
        n = repeats(C, base)
        result = warm.score(user, cands, now=at)
        assert result.history_len == warm.max_len, result.history_len
        seq = warm.reader.read("user_sequence", [user], at)
        hist = seq.values["hist_item_ids"][0][-warm.max_len:]
        item_rows = {v: warm.items.read(v, cands + hist if v == warm.embedding_view else cands) for v in warm.item_views}
        prepared = warm.prepare(cands, seq.status[0], hist, item_rows, at)

        def floor():
            with torch.inference_mode():
                warm.forward(prepared.tensors, C)

        row = {"C": C, "L": len(hist), "floor": timed(floor, n), "warm": timed(lambda: warm.score(user, cands, now=at), n),
               "user_uncached": timed(lambda: per_request.score(user, cands, now=at), n),
               "cold": timed(lambda: cold.score(user, cands, now=at), max(20, n // 3))}
        parts = [warm.score(user, cands, now=at).timings_ms for _ in range(min(n, 50))]
        row["parts_ms"] = {k: float(np.median([p[k] for p in parts])) for k in parts[0]}
        if with_feast:
            ours = torch.tensor([i.logit for i in result.items])
            theirs = feast_request(store, warm, user, cands, at)
            row["feast_max_abs_diff"] = float((ours - theirs).abs().max())
            row["feast"] = timed(lambda: feast_request(store, warm, user, cands, at), max(20, n // 3), warmup=2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_dmf_paths(checkpoint: Path, base: int) -> list[dict]:
    """Decoupled target attention vs early fusion at C = 1200 (random weights, speed only)."""
    from mmfs.model.dmf import DMF
    from mmfs.model.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    spec, config = meta["data_spec"], model.config
    early = DMF(spec, dataclasses.replace(config, early_fusion=True)).eval()
    decoupled = DMF(spec, config).eval()
    C, rows = 1200, []
    gen = torch.Generator().manual_seed(0)
    for L in (50, 200):
        user = {"hist_idx": torch.randint(2, spec.n_items, (1, L), generator=gen), "hist_mask": torch.ones(1, L, dtype=torch.bool),
                "hist_mm_emb": torch.randn(1, L, spec.mm_dim, generator=gen), "hist_mm_emb_found": torch.ones(1, L, dtype=torch.bool)}
        cands = {"item_idx": torch.randint(2, spec.n_items, (C,), generator=gen), "mm_emb": torch.randn(C, spec.mm_dim, generator=gen),
                 "hist_sim": torch.rand(C, L, generator=gen) * 2 - 1, "hist_sim_mask": torch.ones(C, L, dtype=torch.bool),
                 "dense": torch.randn(C, 4, generator=gen), "dense_mask": torch.ones(C, dtype=torch.bool),
                 "user_dense": torch.randn(C, 4, generator=gen), "user_dense_mask": torch.ones(C, dtype=torch.bool)}
        row = {"C": C, "L": L}
        for name, m in (("decoupled", decoupled), ("early_fusion", early)):
            with torch.inference_mode():
                state = m.encode_user(user)
                row[name] = timed(lambda: m.score_candidates(m.encode_user(user), cands), max(20, base // 10))
                row[f"{name}_encode_user"] = timed(lambda: m.encode_user(user), max(20, base // 10))
                row[f"{name}_candidates"] = timed(lambda: m.score_candidates(state, cands), max(20, base // 10))
        row["speedup"] = row["early_fusion"]["mean_ms"] / row["decoupled"]["mean_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# -- HTTP ------------------------------------------------------------------------------------------

async def _post(reader, writer, request: bytes) -> int:
    """One pre-encoded request on a keep-alive connection; its status (the body is read and dropped)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in lines[1:] if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return int(lines[0].split(b" ", 2)[1])


def encoded_post(url: str, body: dict) -> tuple[str, int, bytes]:
    """(host, port, the bytes of a POST of ``body`` as JSON to ``url``)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    data = json.dumps(body).encode()
    head = (f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n").encode()
    return parts.hostname, parts.port, head + data


async def _load(calls: list[tuple[str, dict]], concurrency: int, requests: int, duration: float) -> dict:
    """``concurrency`` clients sending requests for ``duration`` s or ``requests`` in all; a request is
    ``calls`` (url, json body) made one after the other, timed together (Feast's user + items reads).
    Each client holds one keep-alive connection and sends pre-encoded bytes: on these 2 cores an
    httpx client's own encoding and parsing were counted in the server's latency and shared its cores."""
    latencies, errors, statuses = [], 0, {}
    sent = 0
    deadline = time.perf_counter() + duration
    encoded = [encoded_post(url, body) for url, body in calls]

    async def worker():
        nonlocal sent, errors
        conns = {}
        try:
            for host, port, _ in encoded:
                if (host, port) not in conns:
                    conns[host, port] = await asyncio.open_connection(host, port)
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                began = time.perf_counter()
                failed = False
                for host, port, request in encoded:
                    try:
                        status = await _post(*conns[host, port], request)
                        statuses[status] = statuses.get(status, 0) + 1
                        failed |= status != 200
                    except (OSError, asyncio.IncompleteReadError):
                        failed = True
                        conns[host, port] = await asyncio.open_connection(host, port)
                errors += failed
                latencies.append(time.perf_counter() - began)
        finally:
            for _, writer in conns.values():
                writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - began
    return {**percentiles(latencies), "qps": len(latencies) / wall, "errors": errors, "statuses": statuses, "wall_s": wall,
            "concurrency": concurrency}


def load_client(argv: list[str]) -> int:
    """The load generator (a second process): prints one JSON line."""
    p = argparse.ArgumentParser()
    p.add_argument("--calls", required=True, help="JSON list of [url, body]: one request")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--duration", type=float, default=60)
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(_load([tuple(c) for c in json.loads(a.calls)], a.concurrency, a.requests, a.duration))))
    return 0


def run_load(calls: list[tuple[str, dict]], concurrency: int, requests: int, duration: float = 30) -> dict:
    """One load run from a process of its own."""
    client = subprocess.run([sys.executable, "-m", "benchmarks.bench_serving", "--load-client", "--calls", json.dumps(calls),
                             "--concurrency", str(concurrency), "--requests", str(requests), "--duration", str(duration)],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(client.stdout.strip().splitlines()[-1])


HTTP_RUNS = ((1, 1), (100, 1), (100, 4), (100, 16), (500, 1), (1200, 1), (1200, 4))  # (C, concurrency)


def bench_http(checkpoint: Path, root: Path, repo: Path, user: int, items: list[int], at: dt.datetime, requests: int,
               workers: int = 1) -> list[dict]:
    """``mmfs serve --workers N``, loaded from a second process: client-side latency, QPS, 503s, server RSS."""
    import psutil

    from benchmarks.resources import serving_process

    rows = []
    with serving_process(checkpoint, root, repo, ready_timeout_s=180, workers=workers) as (server, base):
        proc = psutil.Process(server.pid)
        rss = lambda: sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20  # noqa: E731
        for C, concurrency in HTTP_RUNS:
            body = {"user_id": user, "item_ids": items[:C], "at": at.isoformat()}
            rss_before = rss()
            row = {"C": C, "workers": workers, **run_load([(f"{base}/score", body)], concurrency, requests if C <= 100 else requests // 4),
                   "rss_before_mib": rss_before, "rss_after_mib": rss()}
            rows.append(row)
            print(json.dumps(row), flush=True)
        server.terminate()
        rows[-1]["shutdown_rc"] = server.wait(timeout=30)
    return rows


CPU_SIZES = (1, 100, 1200)
CPU_FORMATS = ("items", "arrays", "batch8")  # /score's two answer shapes, and /score/batch with 8 requests (items)


class KeepAliveClient:
    """A lean HTTP/1.1 client on one keep-alive loopback connection: pre-encoded requests, the
    answer read by its content-length. The load generator's own CPU is then small beside the
    server's, on the same cores."""

    def __init__(self, base: str):
        host, port = base.rsplit("/", 1)[-1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.sock = None

    def post(self, path: str, body: dict) -> bytes:
        """The bytes of a POST of ``body`` as JSON to ``path``."""
        return encoded_post(f"http://{self.host}:{self.port}{path}", body)[2]

    def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one pre-encoded request; (status, body). A connection the server closed while idle
        (uvicorn's keep-alive timeout) is opened again."""
        import socket

        for attempt in (1, 2):
            if self.sock is None:
                self.sock = socket.create_connection((self.host, self.port))
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(request)
            answer = self.sock.recv(65536)
            if answer:
                break
            self.close()
        else:
            raise ConnectionError("the server closed the connection")
        while b"\r\n\r\n" not in answer:
            answer += self.sock.recv(65536)
        head, body = answer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in lines[1:] if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            body += self.sock.recv(65536)
        return int(lines[0].split(b" ", 2)[1]), body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def cpu_requests(C: int, base: int) -> int:
    """Requests per size for the CPU comparison: a few seconds of CPU each (/proc counts 10 ms ticks)."""
    return max(200, base // max(1, C // 100))


def bench_cpu(store, checkpoint: Path, root: Path, repo: Path, user: int, items: list[int], at: dt.datetime, base: int,
              formats: tuple[str, ...] = CPU_FORMATS, rounds: int = 5, pause_s: float = 0.001) -> list[dict]:
    """CPU per request, side by side: ``Scorer.score`` in this process (process CPU time around n
    calls, one torch thread as ``mmfs serve`` runs) against ``mmfs serve`` over HTTP (the server
    process tree's utime + stime from /proc around n requests; the client runs in this process and
    its CPU is not the server's). HTTP at concurrency 1 (one keep-alive connection: the server
    idles between requests) and at concurrency 4 (requests wait, so the scorer runs back to back as
    the in-process loop does); the in-process scorer also with a ``pause_s`` sleep after each call,
    which shows what idling between calls costs by itself. The measurements alternate in ``rounds``
    blocks so that other load on the machine falls on all alike. Both sides do the same work: the
    server's served-feature log is off here. Also each side's latency (p50/p99)."""
    from benchmarks.resources import serving_process, tree_cpu_seconds
    from mmfs.serving.scorer import Scorer
    from mmfs.serving.tuning import tune_for_serving

    scorer = Scorer.from_checkpoint(checkpoint, store)
    threads = torch.get_num_threads()
    blas_limit = tune_for_serving()  # noqa: F841 - kept alive for the run
    rows = []
    with serving_process(checkpoint, root, repo, ready_timeout_s=180, extra=("--request-log", "off")) as (server, url):
        client = KeepAliveClient(url)
        torch.set_num_threads(1)  # mmfs serve's default --torch-threads
        try:
            for fmt in formats:
                for C in CPU_SIZES:
                    cands, n = items[:C], cpu_requests(C, base)
                    one = {"user_id": user, "item_ids": cands, "at": at.isoformat()}
                    per = int(fmt[len("batch"):]) if fmt.startswith("batch") else 1  # user requests per HTTP request
                    path, body = ("/score/batch", {"requests": [one] * per}) if per > 1 else ("/score", {**one, "format": fmt})
                    request = client.post(path, body)
                    for _ in range(20):  # warm: caches, lazy imports
                        scorer.score(user, cands, now=at)
                        status, answer = client.send(request)
                        assert status == 200, answer[:500]
                    ours, theirs, cpu = [], [], {"in": 0.0, "paced": 0.0, "http": 0.0, "http4": 0.0}
                    busy = []
                    k = n // rounds
                    for _ in range(rounds):
                        cpu0 = time.process_time()
                        for _ in range(k):
                            began = time.perf_counter()
                            scorer.score(user, cands, now=at)
                            ours.append(time.perf_counter() - began)
                        cpu["in"] += time.process_time() - cpu0
                        for _ in range(k):
                            cpu0 = time.process_time()
                            scorer.score(user, cands, now=at)
                            cpu["paced"] += time.process_time() - cpu0
                            time.sleep(pause_s)
                        cpu0 = tree_cpu_seconds(server.pid)
                        for _ in range(k // per):
                            began = time.perf_counter()
                            status, _ = client.send(request)
                            theirs.append(time.perf_counter() - began)
                            assert status == 200, status
                        cpu["http"] += tree_cpu_seconds(server.pid) - cpu0
                        cpu0 = tree_cpu_seconds(server.pid)
                        busy.append(asyncio.run(_load([(url + path, body)], 4, k // per, 300)))
                        cpu["http4"] += tree_cpu_seconds(server.pid) - cpu0
                        assert busy[-1]["errors"] == 0 and busy[-1]["n"] == k // per, busy[-1]
                    ms = {key: v / ((k // per) * per * rounds if key.startswith("http") else k * rounds) * 1e3 for key, v in cpu.items()}
                    row = {"C": C, "format": fmt, "per_request": per, "n": k * rounds, "in_process_cpu_ms": ms["in"], "in_process_paced_cpu_ms": ms["paced"],
                           "http_cpu_ms": ms["http"], "http4_cpu_ms": ms["http4"], "ratio": ms["http"] / ms["in"],
                           "ratio4": ms["http4"] / ms["in"], "pause_ms": pause_s * 1e3, "in_process": percentiles(ours),
                           "http": percentiles(theirs), "http4_qps": per * sum(b["n"] for b in busy) / sum(b["wall_s"] for b in busy),
                           "request_bytes": len(request)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            torch.set_num_threads(threads)
            client.close()
    return rows


def bench_feast_server(config: str, repo: Path, root: Path, user: int, items: list[int], requests: int) -> list[dict]:
    """``feast serve`` on the same repo: 1 user + C items through the benchmark services (pre-computed on Redis)."""
    from benchmarks.serving_peers import check_feast_answer, feast_bodies, feast_server

    rows = []
    with feast_server(config, repo, root) as base:
        for C, concurrency in HTTP_RUNS:
            answer = check_feast_answer(base, user, items[:C])
            assert answer["with_vector"] == C, answer
            calls = [(f"{base}/get-online-features", b) for b in feast_bodies(user, items[:C])]
            row = {"C": C, "store": config, **run_load(calls, concurrency, requests if C <= 100 else requests // 4), "checked": answer}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--load-client":
        return load_client(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(ROOT / "out" / "movielens"))
    parser.add_argument("--checkpoint", default=None, help="default: <root>/models/dmf/checkpoint.pt")
    parser.add_argument("--at", type=parse_time, default=parse_time("2018-10-01T00:00:00Z"))
    parser.add_argument("--work", default=str(ROOT / "bench_out" / "serving"))
    parser.add_argument("--repeats", type=int, default=500, help="requests per size at C = 100 (fewer for larger C)")
    parser.add_argument("--http-requests", type=int, default=2000)
    parser.add_argument("--cpu-requests", type=int, default=2000, help="requests per size in the CPU comparison at C <= 100 (fewer above)")
    parser.add_argument("--only-cpu", action="store_true",
                        help="only the CPU-per-request comparison (in-process against HTTP): printed and kept in <work>/cpu.json, no report")
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--report", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    root, work = Path(args.root), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (root / "target_similarity").exists():
        raise SystemExit(f"{root} has no tables: run `make demo` first")
    checkpoint = Path(args.checkpoint or root / "models" / "dmf" / "checkpoint.pt")
    if not checkpoint.exists():
        from mmfs.model.train import main as train_main

        train_main(["--model", "dmf", "--training-set", str(root / "training_sets" / "ctr_dmf_v1"), "--out", str(checkpoint.parent), "--max_epochs=3"])
    results = {"at": args.at.isoformat(), "machine": machine_description()}
    from mmfs.model.checkpoint import load_checkpoint

    _, meta = load_checkpoint(checkpoint)
    m = meta["config"]["model"]
    results["model"] = f"{m['name']}, id_dim {m['id_dim']}, MLP {tuple(m['mlp'])}"
    repo = prepare_store(work, root)
    feast_store.materialize("duckdb", repo, root, end=args.at)
    store = feast_store.open_store("duckdb", repo, root)
    user, items = pick_user_and_items(root, args.at, max(SIZES))
    results["user"] = user
    if args.only_cpu:
        rows = bench_cpu(store, checkpoint, root, repo, user, items, args.at, args.cpu_requests, CPU_FORMATS)
        (work / "cpu.json").write_text(json.dumps(rows, indent=1))
        return 0
    results["sqlite"] = bench_in_process(store, checkpoint, user, items, args.at, args.repeats, with_feast=True)
    results["dmf_paths"] = bench_dmf_paths(checkpoint, args.repeats)
    from benchmarks.serving_peers import forward_ceiling, precompute

    results["ceiling"] = forward_ceiling(checkpoint, root, repo, user, items[:100], args.at, processes=os.cpu_count() or 2)
    print(json.dumps(results["ceiling"]), flush=True)
    if not args.skip_http:
        results["http"] = [row for workers in (1, os.cpu_count() or 2)
                           for row in bench_http(checkpoint, root, repo, user, items, args.at, args.http_requests, workers)]
        results["cpu"] = bench_cpu(store, checkpoint, root, repo, user, items, args.at, args.cpu_requests, CPU_FORMATS)
        results["feast_server"] = bench_feast_server("duckdb", repo, root, user, items, args.http_requests)
    if not args.skip_redis:
        from tests.support.redis_server import redis_server

        with redis_server(work) as port:
            redis_repo = prepare_store(work, root, "redis", port)
            feast_store.materialize("redis", redis_repo, root, end=args.at)
            rstore = feast_store.open_store("redis", redis_repo, root)
            results["precompute"] = precompute(rstore)
            results["redis"] = bench_in_process(rstore, checkpoint, user, items, args.at, args.repeats // 2, with_feast=True)
            if not args.skip_http:
                results["feast_server_redis"] = bench_feast_server("redis", redis_repo, root, user, items, args.http_requests)
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    text = section(results)
    write_section(Path(args.report), text, SECTION, END)
    chart(results, Path(args.report).parent / "serving_latency.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

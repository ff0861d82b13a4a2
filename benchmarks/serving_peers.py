"""The serving benchmark's peers, measured in the same run as mmfs (``make bench-serving``):

- Feast's own Python feature server (``feast serve``) on the same repo and features, reading 1 user
  and C items over HTTP: two benchmark-only services (user side, item side) declared with
  ``precompute_online=True``, so that on Redis Feast serves its pre-computed path (one blob per
  entity, ``FeatureStore.precompute_feature_service``). Feast finds the entities to pre-compute by
  scanning Redis only; on SQLite the same services are read view by view. The request returns the
  features without scoring them.
- The ceiling of the machine's cores running only the model forward (one process per core, one
  torch thread each, on ready tensors): what "QPS >= 0.6 x the ceiling" is judged against.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_SERVICE, ITEM_SERVICE = "bench_user_v1", "bench_items_v1"
SERVICES = '''"""Benchmark-only services (benchmarks/serving_peers.py): Feast's pre-computed path for the features ctr_dmf_v1 serves."""
from feast import FeatureService

from features import item_embeddings_fv, item_stats_fv, user_sequence_fv, user_stats_fv

{user} = FeatureService(name="{user}", features=[user_sequence_fv, user_stats_fv], precompute_online={precompute})
{items} = FeatureService(name="{items}", features=[item_embeddings_fv[["mm_emb", "has_image"]], item_stats_fv],
                         precompute_online={precompute})
'''


def add_bench_services(repo: Path, precompute: bool) -> None:
    """Declare the two benchmark services in the benchmark's copy of the repo (before it is applied);
    ``precompute``: Feast's pre-computed path (Redis only: Feast finds the entities by scanning Redis)."""
    (repo / "bench_services.py").write_text(SERVICES.format(user=USER_SERVICE, items=ITEM_SERVICE, precompute=precompute))


def precompute(store) -> dict:
    """Feast's pre-computation of both services; the number of blobs written and the seconds it took."""
    began = time.perf_counter()
    written = {name: store.precompute_feature_service(name) for name in (USER_SERVICE, ITEM_SERVICE)}
    return {"written": written, "seconds": time.perf_counter() - began}


@contextmanager
def feast_server(config: str, repo: Path, root: Path, workers: int = 1, ready_timeout_s: float = 120):
    """``feast serve`` over ``repo`` in a process of its own on a free loopback port; yields its base URL."""
    import httpx

    from mmfs.store.feast_store import repo_env, yaml_path
    from tests.support.processes import stop, wait_started
    from tests.support.redis_server import free_port

    port = free_port()
    fs_yaml = yaml_path(config, repo)
    feast = Path(sys.executable).parent / "feast"
    cmd = [str(feast), "-f", str(fs_yaml), "serve", "-p", str(port), "--no-access-log", "-w", str(workers)]
    log = open(repo.parent / f"feast_serve_{config}.log", "wb")
    server = subprocess.Popen(cmd, cwd=repo, env={**os.environ, **repo_env(root, fs_yaml)}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_started(server, answers, "feast serve", ready_timeout_s, lambda: f"see {log.name}")
        yield base
    finally:
        stop(server)
        log.close()


def feast_bodies(user: int, items: list[int]) -> list[dict]:
    """One scoring request's reads from Feast's server: the user's features, then the C items'."""
    # full_feature_names: Feast 0.67 stores pre-computed blobs under "view__feature" names and, asked
    # for bare names, finds a "schema mismatch" and fails the request (feast online_store.py).
    return [{"feature_service": USER_SERVICE, "entities": {"user_id": [user]}, "full_feature_names": True},
            {"feature_service": ITEM_SERVICE, "entities": {"item_id": list(items)}, "full_feature_names": True}]


def check_feast_answer(base: str, user: int, items: list[int]) -> dict:
    """One request through Feast's server, checked: every candidate's vector comes back."""
    import httpx

    user_body, item_body = feast_bodies(user, items)
    with httpx.Client(timeout=30) as client:
        u = client.post(f"{base}/get-online-features", json=user_body)
        i = client.post(f"{base}/get-online-features", json=item_body)
    u.raise_for_status()
    i.raise_for_status()
    answer = i.json()
    names = answer["metadata"]["feature_names"]
    vectors = answer["results"][names.index("item_embeddings__mm_emb")]["values"]
    return {"items": len(vectors), "with_vector": sum(v is not None for v in vectors), "user_bytes": len(u.content), "item_bytes": len(i.content)}


# -- the forward-only ceiling --------------------------------------------------------------------

def forward_loop(argv: list[str]) -> int:
    """One process of the ceiling: the bare model forward on ready tensors for ``--seconds``; prints calls/s."""
    import argparse
    import datetime as dt

    import torch

    from mmfs.store import feast_store
    from mmfs.serving.scorer import Scorer

    p = argparse.ArgumentParser()
    for flag in ("--checkpoint", "--root", "--repo", "--items", "--at"):
        p.add_argument(flag, required=True)
    p.add_argument("--user", type=int, required=True)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--start-at", type=float, required=True, help="time.time() at which to start (both processes together)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    store = feast_store.open_store("duckdb", a.repo, a.root)
    scorer = Scorer.from_checkpoint(a.checkpoint, store)
    items = [int(x) for x in a.items.split(",")]
    at = dt.datetime.fromisoformat(a.at)
    seq = scorer.reader.read("user_sequence", [a.user], at)
    hist = seq.values["hist_item_ids"][0][-scorer.max_len:]
    rows = {v: scorer.items.read(v, items + hist if v == scorer.embedding_view else items) for v in scorer.item_views}
    prepared = scorer.prepare(items, seq.status[0], hist, rows, at)
    time.sleep(max(0.0, a.start_at - time.time()))
    calls, began = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - began < a.seconds:
            scorer.forward(prepared.tensors, len(items))
            calls += 1
    print(json.dumps({"calls_per_s": calls / (time.perf_counter() - began)}))
    return 0


def forward_ceiling(checkpoint: Path, root: Path, repo: Path, user: int, items: list[int], at, processes: int = 2,
                    seconds: float = 10) -> dict:
    """Calls/s of ``processes`` processes running only the forward at once (one torch thread each), summed."""
    start = time.time() + 20  # after every process has loaded
    cmd = [sys.executable, "-m", "benchmarks.serving_peers", "--forward-loop", "--checkpoint", str(checkpoint), "--root", str(root),
           "--repo", str(repo), "--items", ",".join(map(str, items)), "--at", at.isoformat(), "--user", str(user),
           "--seconds", str(seconds), "--start-at", str(start)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(processes)]
    rates = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1])["calls_per_s"] for p in procs]
    return {"processes": processes, "per_process": rates, "calls_per_s": sum(rates), "C": len(items)}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--forward-loop"]:
        raise SystemExit(forward_loop(sys.argv[2:]))
    raise SystemExit("usage: python -m benchmarks.serving_peers --forward-loop ...")

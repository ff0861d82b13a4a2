"""``mmfs serve`` in a process of its own, for the tests and the benchmarks."""
from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import stop, wait_started


def worker_pids(base: str, workers: int, tries: int = 40) -> set[int]:
    """The pids of the server processes that answer ``/health`` (asked ``tries`` times, on fresh connections)
    and say they are ready; stops early once ``workers`` were seen."""
    import httpx

    seen: set[int] = set()
    for _ in range(tries if workers > 1 else 1):
        with httpx.Client(timeout=2) as client:  # a new connection: the kernel hands it to any worker
            pid = client.get(f"{base}/health").json().get("pid")
            if client.get(f"{base}/ready").status_code == 200 and pid is not None:
                seen.add(pid)
        if len(seen) >= workers:
            break
    return seen


@contextmanager
def serving_process(checkpoint, root, repo=None, ready_timeout_s: float = 180, workers: int = 1, extra: tuple[str, ...] = ()):
    """``mmfs serve`` in a process of its own on a free loopback port, yielded as (process, base
    URL) once ``/ready`` answers 200 (with ``workers`` > 1: from every worker process, told apart by
    the pid ``/health`` gives); terminated on the way out if it still runs."""
    import httpx

    from tests.support.redis_server import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "mmfs.cli", "serve", "--checkpoint", str(checkpoint), "--root", str(root),
           *(["--repo", str(repo)] if repo else []), "--port", str(port), "--log-level", "warning",
           "--workers", str(workers), *extra]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2])
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/ready", timeout=2).status_code == 200 and len(worker_pids(base, workers)) >= workers
        except httpx.HTTPError:
            return False

    try:
        wait_started(server, answers, "mmfs serve", ready_timeout_s, lambda: server.stdout.read().decode()[-2000:])
        yield server, base
    finally:
        stop(server)

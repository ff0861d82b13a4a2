"""A real redis-server on a free loopback port, for tests. Install: `make redis` (Debian package)."""
from __future__ import annotations

import shutil
import socket
import subprocess
from contextlib import contextmanager

from tests.support.processes import stop, wait_started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(tmp_dir, port: int | None = None):
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make redis` (apt-get install redis-server)")
    port = port or free_port()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_dir), "--protected-mode", "yes"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_started(proc, answers, "redis-server", 20, lambda: proc.stdout.read().decode()[-2000:], interval_s=0.05)
        yield port
    finally:
        stop(proc, 10)

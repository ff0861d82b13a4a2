"""Starting and stopping a server process for the tests and benchmarks (redis-server, mmfs serve,
feast serve): wait until it answers, or fail with what it said; stop it on the way out."""
from __future__ import annotations

import subprocess
import time
from typing import Callable


def wait_started(process: subprocess.Popen, answers: Callable[[], bool], what: str, timeout_s: float,
                 output: Callable[[], str] = lambda: "", interval_s: float = 0.5) -> None:
    """Return once ``answers()`` is true; raise with ``output()`` if ``process`` exits or ``timeout_s`` passes first.
    ``answers`` returns False (never raises) while the server is not up yet."""
    deadline = time.time() + timeout_s
    while not answers():
        if process.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"{what} did not start: {output()}")
        time.sleep(interval_s)


def stop(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """Terminate ``process`` if it still runs; kill it if it does not end within ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()

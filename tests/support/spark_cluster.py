"""A real Spark standalone cluster (one master, one worker) on loopback, for tests.

pyspark's wheel ships ``spark-class`` but not the ``sbin/start-*.sh`` scripts, so the master and the
worker are started as foreground processes with the same main classes those scripts run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.redis_server import free_port



@dataclass(frozen=True)
class Cluster:
    master_url: str
    ui_url: str
    work_dir: Path

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as reply:
            return json.loads(reply.read())


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _spark_class() -> str:
    found = _spark_home() / "bin" / "spark-class"
    if not found.exists():
        raise RuntimeError(f"{found} not found: pyspark's launcher scripts are missing")
    return str(found)


@contextmanager
def spark_cluster(tmp_dir: Path, cores: int = 1, memory: str = "1g", timeout: float = 120):
    env = {**os.environ, "SPARK_HOME": str(_spark_home()), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    port, ui, worker_ui = free_port(), free_port(), free_port()
    work_dir = Path(tmp_dir) / "worker"
    work_dir.mkdir(parents=True, exist_ok=True)
    logs = Path(tmp_dir) / "cluster-logs"
    logs.mkdir(exist_ok=True)
    procs = []
    try:
        procs.append(subprocess.Popen(
            [_spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(ui)], env=env, stdout=(logs / "master.log").open("w"), stderr=subprocess.STDOUT))
        cluster = Cluster(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}", work_dir)
        procs.append(subprocess.Popen(
            [_spark_class(), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
             "--memory", memory, "--webui-port", str(worker_ui), "--work-dir", str(work_dir), cluster.master_url],
            env=env, stdout=(logs / "worker.log").open("w"), stderr=subprocess.STDOUT))
        deadline = time.time() + timeout
        while True:
            try:
                if cluster.state().get("aliveworkers", 0) >= 1:
                    break
            except OSError:
                pass
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.time() > deadline:
                tail = "\n".join(f"--- {f.name}\n{f.read_text()[-2000:]}" for f in sorted(logs.iterdir()))
                raise RuntimeError(f"the standalone cluster did not come up:\n{tail}")
            time.sleep(0.5)
        yield cluster
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

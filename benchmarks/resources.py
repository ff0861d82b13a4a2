"""Wall time and peak resident memory of the whole process tree (driver, JVM, Python workers)."""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.support.serve_process import serving_process  # noqa: F401 - the benchmarks' server, shared with the tests


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    peak_python_bytes: int = 0  # the largest single non-JVM process (a driver holding a table shows here)
    peak_jvm_bytes: int = 0  # Spark's JVM (its heap is capped by spark.driver.memory and spills beyond)


def tree_rss_by_kind() -> tuple[int, int, int]:
    """(whole tree, largest Python process, JVMs) resident bytes for this process and its children."""
    me = psutil.Process(os.getpid())
    total = python_max = jvm = 0
    for proc in [me] + me.children(recursive=True):
        try:
            rss = proc.memory_info().rss
            name = proc.name()
        except psutil.Error:
            continue
        total += rss
        if name.startswith("java"):
            jvm += rss
        else:  # Python: the interpreter itself, or a console script such as `feast`
            python_max = max(python_max, rss)
    return total, python_max, jvm


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, from /proc/<pid>/stat) of ``pid`` and its live descendants, e.g. a
    server and its uvicorn worker processes. Clock-tick resolution (10 ms): measure over seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": fields 3.. of proc(5); comm may hold spaces
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime (14), stime (15)
    return total


def tree_rss() -> int:
    return tree_rss_by_kind()[0]


@contextmanager
def measured(interval: float = 0.25):
    result = Measurement()
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            total, python_max, jvm = tree_rss_by_kind()
            result.peak_rss_bytes = max(result.peak_rss_bytes, total)
            result.peak_python_bytes = max(result.peak_python_bytes, python_max)
            result.peak_jvm_bytes = max(result.peak_jvm_bytes, jvm)
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - start
        stop.set()
        sampler.join()


def machine_description() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, GPU: {gpu}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}")


def write_section(report: Path, text: str, section: str, end: str) -> None:
    """Replace the generated section from ``section`` to ``end`` in ``report`` with ``text``, or
    insert it above the kept hand-written notes when the report has none yet."""
    current = report.read_text() if report.exists() else ""
    if section in current:
        current = re.sub(re.escape(section) + r".*?" + re.escape(end) + r"\n?", lambda _: text, current, flags=re.S)
    else:
        marker = "<!-- notes below this line"
        at = current.find(marker)
        current = current + "\n" + text if at < 0 else current[:at] + text + "\n" + current[at:]
    report.write_text(current)



"""Process-wide tuning for a serving process: set once, by the process that owns itself (``mmfs
serve``, the serving benchmarks), never by a ``Scorer``, so an application or a test that embeds
one keeps its own settings."""
from __future__ import annotations

import gc
from dataclasses import dataclass

import torch
from threadpoolctl import threadpool_limits


@dataclass(frozen=True)
class ProcessTuning:
    """What a serving process sets for itself, once, after loading (``tune_for_serving``). These are
    process-wide, so a ``Scorer`` never sets them: an embedding application or a test keeps its own."""
    torch_threads: int = 0  # 0: torch's default
    blas_threads: int = 1  # numpy's BLAS pool
    freeze_gc: bool = True  # gc.freeze(): the long-lived objects loaded so far leave the collector's scans


def tune_for_serving(tuning: ProcessTuning = ProcessTuning()):
    """Tune the whole process for low-latency scoring; returns the BLAS limit (keep it alive).

    - numpy's BLAS threads (the similarity's matrix product) spin after each call and starve
      torch's intra-op threads: on 2 cores that turned p99 at C=500 from 16 ms into 120 ms.
      Requests are small; one BLAS thread is enough.
    - Feast, torch and pyspark leave ~10^6 long-lived objects; a full collection walking them took
      170 ms in the middle of a C=1200 request. Freezing them keeps them out of the collector's scans.
    """
    if tuning.torch_threads:
        torch.set_num_threads(tuning.torch_threads)
    limit = threadpool_limits(limits=tuning.blas_threads, user_api="blas")
    if tuning.freeze_gc:
        gc.collect()
        gc.freeze()
    return limit

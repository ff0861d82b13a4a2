"""The scorer's Prometheus metrics, held by the app that counts them.

prometheus_client picks its value store once, when it is first imported: if
``PROMETHEUS_MULTIPROC_DIR`` is set by then (importing ``feast.metrics`` sets it), every metric
of a given name shares one memory-mapped value per process, whatever registry it is in, and two
scorers in one process (tests, an embedding app) would count each other's requests. So the
values live here, in plain dicts under a lock, and reach Prometheus through a custom collector
(``prometheus_client.core``'s metric families, which hold no values of their own).
"""
from __future__ import annotations

import bisect
import math
import threading

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily


class _Series:
    def __init__(self, owner: "_Metric", key: tuple):
        self.owner, self.key = owner, key

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0) to this series."""
        if amount < 0:
            raise ValueError("counters only go up")
        with self.owner.lock:
            self.owner.values[self.key] = self.owner.values.get(self.key, 0.0) + amount

    def set(self, value: float) -> None:
        """Set this series to ``value``."""
        with self.owner.lock:
            self.owner.values[self.key] = float(value)


class _Metric:
    def __init__(self, kind: str, name: str, documentation: str, labelnames: tuple[str, ...] = ()):
        self.kind, self.name, self.documentation, self.labelnames = kind, name, documentation, tuple(labelnames)
        self.lock = threading.Lock()
        self.values: dict[tuple, float] = {}

    def labels(self, *values) -> _Series:
        """The series for these label values, one per label name."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        return _Series(self, tuple(str(v) for v in values))

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` to the unlabelled series."""
        _Series(self, ()).inc(amount)

    def set(self, value: float) -> None:
        """Set the unlabelled series to ``value``."""
        _Series(self, ()).set(value)

    def family(self):
        """A snapshot of the values as a Prometheus counter or gauge family."""
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        with self.lock:
            items = sorted(self.values.items())
        if not self.labelnames:
            return cls(self.name, self.documentation, value=dict(items).get((), 0.0))
        family = cls(self.name, self.documentation, labels=self.labelnames)
        for key, value in items:
            family.add_metric(list(key), value)
        return family


class _Histogram:
    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]):
        self.name, self.documentation = name, documentation
        self.bounds = tuple(sorted(buckets))
        self.lock = threading.Lock()
        self.counts = [0] * (len(self.bounds) + 1)  # the last: +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in its bucket and add it to the sum."""
        with self.lock:
            self.counts[bisect.bisect_left(self.bounds, value)] += 1
            self.total += value

    def family(self):
        """A snapshot as a Prometheus histogram family (cumulative bucket counts, sum)."""
        with self.lock:
            counts, total = list(self.counts), self.total
        cumulative, running = [], 0
        for bound, n in zip(self.bounds + (math.inf,), counts):
            running += n
            cumulative.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
        return HistogramMetricFamily(self.name, self.documentation, buckets=cumulative, sum_value=total)


class Metrics:
    """What ``/metrics`` reports for one app: requests and errors by endpoint, the score latency,
    stale features, item errors, readiness and the item cache."""

    def __init__(self):
        self.requests = _Metric("counter", "mmfs_requests", "HTTP requests", ("endpoint", "status"))
        self.errors = _Metric("counter", "mmfs_errors", "requests that failed", ("endpoint", "kind"))
        self.latency = _Histogram("mmfs_score_latency_seconds", "POST /score latency (server side)",
                                  (.001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .1, .25, .5, 1, 2.5))
        self.stale = _Metric("counter", "mmfs_stale_features", "feature values older than their TTL, flagged in responses")
        self.item_errors = _Metric("counter", "mmfs_item_errors", "candidates answered with an error entry")
        self.ready = _Metric("gauge", "mmfs_ready", "1 when the model and store are loaded")
        self.cache_hits = _Metric("gauge", "mmfs_item_cache_hits", "item feature cache hits")
        self.cache_misses = _Metric("gauge", "mmfs_item_cache_misses", "item feature cache misses")
        self.user_cache_hits = _Metric("gauge", "mmfs_user_cache_hits", "requests whose user side (history vectors, DMF user state) was cached")
        self.user_cache_misses = _Metric("gauge", "mmfs_user_cache_misses", "requests whose user side was computed")
        self.logged = _Metric("counter", "mmfs_request_log_records", "served-feature records written to the request log")
        self.log_dropped = _Metric("counter", "mmfs_request_log_dropped", "served-feature records dropped: the log's queue was full or its write failed")
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self):
        """The collector protocol: one metric family per metric."""
        for metric in (self.requests, self.latency, self.errors, self.stale, self.item_errors, self.ready, self.cache_hits,
                       self.cache_misses, self.user_cache_hits, self.user_cache_misses, self.logged, self.log_dropped):
            yield metric.family()

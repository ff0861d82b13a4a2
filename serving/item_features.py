"""Item features online: one read path for the candidates' and the history items' rows, through a
bounded cache.

Item features change only when they are materialised, so the cache is cleared when the Feast
registry changes (materialisation records its interval there) and entries also expire after
``max_age_s`` (for registries that are not a local file). TTL is judged on each request from the
value's own timestamp, cached or not.
"""
from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from serving.online import OnlineReader, decode


def put_bounded(entries: dict, maxsize: int, key, value) -> None:
    """``entries[key] = value``, first evicting the oldest tenth (insertion order) when full."""
    if len(entries) >= maxsize:
        for old in list(entries)[: max(1, maxsize // 10)]:
            del entries[old]
    entries[key] = value


class ItemFeatureCache:
    """Bounded cache of item rows as read from the online store (FIFO eviction, plain dict lookups).

    Cleared when the Feast registry file changes (materialisation records its interval there) and
    when older than ``max_age_s`` (the bound for registries that are not a local file)."""

    def __init__(self, store, maxsize: int, max_age_s: float):
        self.enabled = maxsize > 0
        self.maxsize = maxsize
        self.max_age_s = max_age_s
        self.entries: dict = {}
        self.filled_at = time.monotonic()
        registry = store.config.registry
        path = Path(getattr(registry, "path", "") or "")
        if path and not path.is_absolute():
            path = Path(store.repo_path) / path
        self.registry_path = path if path and path.is_file() else None
        self.registry_stamp = self._stamp()
        self.hits = self.misses = self.invalidations = 0

    def _stamp(self):
        if self.registry_path is None:
            return None
        try:
            st = os.stat(self.registry_path)
            return st.st_mtime_ns, st.st_size
        except OSError:
            return None

    def check(self) -> None:
        """Once per request: clear on a registry change or when the cache is too old."""
        stamp = self._stamp()
        if stamp != self.registry_stamp or time.monotonic() - self.filled_at > self.max_age_s:
            self.registry_stamp = stamp
            self.clear()

    def clear(self) -> None:
        """Drop every entry and restart the age clock; counted in ``invalidations``."""
        self.entries.clear()
        self.filled_at = time.monotonic()
        self.invalidations += 1

    def get_many(self, view: str, ids: list[int]) -> list:
        """The cached value of (view, id) for each id, None where absent; counts hits and misses."""
        if not self.enabled:
            self.misses += len(ids)
            return [None] * len(ids)
        get = self.entries.get
        found = [get((view, i)) for i in ids]
        missed = found.count(None)
        self.misses += missed
        self.hits += len(ids) - missed
        return found

    def put(self, key, value) -> None:
        """Cache ``value`` under ``key`` (``put_bounded``); a no-op when disabled."""
        if self.enabled:
            put_bounded(self.entries, self.maxsize, key, value)

    def discard(self, key) -> None:
        """Drop ``key`` if cached."""
        self.entries.pop(key, None)


class ItemFeatures:
    """The item views of a service, read by item id: cached rows first, the rest in one online read."""

    def __init__(self, reader: OnlineReader, cache: ItemFeatureCache):
        self.reader, self.cache = reader, cache
        self.views = [v for v, (fv, _) in reader.views.items() if tuple(fv.join_keys) == ("item_id",)]

    def read(self, view: str, ids: list[int]) -> dict[int, tuple[dict | None, dt.datetime | None]]:
        """item -> (decoded features or None, event timestamp)."""
        _, features = self.reader.views[view]
        cached = self.cache.get_many(view, ids)
        out = {item: hit for item, hit in zip(ids, cached) if hit is not None}
        misses = [item for item, hit in zip(ids, cached) if hit is None]
        if misses:
            for item, (event_ts, data) in zip(misses, self.reader.read_rows(view, misses)):
                value = (None if data is None else {f: decode(data[f], arrays=True) if f in data else None for f in features}, event_ts)
                out[item] = value
                self.cache.put((view, item), value)
        return out

    def statuses(self, view: str, stamps: list[dt.datetime | None], now: dt.datetime) -> list[str]:
        """present | stale | missing per timestamp, by the reader's one TTL rule."""
        return self.reader.statuses(view, stamps, now)

    def invalidate(self, item_id: int) -> None:
        """Drop ``item_id``'s cached rows in every item view."""
        for view in self.views:
            self.cache.discard((view, item_id))


class UserSideCache:
    """The user side of a request, per user: the history's vectors (as the model reads them) and,
    for DMF, its ``encode_user`` state, so that repeated requests for one user only score
    candidates (M-FALCON's reuse of the target-independent work).

    Keyed by (user, the sequence snapshot's stamp and status, the item cache's invalidation count):
    a new click writes a new snapshot, a materialisation or an expiry of the item cache clears it
    (the history's vectors may have changed). Bounded; the oldest entries go first."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.entries: dict = {}
        self.hits = self.misses = 0

    def get(self, key):
        """The cached user side for ``key``, or None (counted as a hit or a miss)."""
        if self.maxsize <= 0:
            return None
        found = self.entries.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key, value) -> None:
        """Keep ``value`` for ``key`` (``put_bounded``); a no-op when disabled."""
        if self.maxsize > 0:
            put_bounded(self.entries, self.maxsize, key, value)

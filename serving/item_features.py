"""Item features online, columnar: one read path for the candidates' and the history items' rows,
through a bounded cache that keeps them as arrays.

A request's item ids become slots in per-view arrays (one dict lookup per id, done in C by
``map``); vectors, stats and event times are then gathered with numpy, so no Python loop runs per
candidate once the items are cached. Ids the cache lacks are read in one online read per view
and decoded straight into arrays.

Item features change only when they are materialised, so the cache is cleared when the Feast
registry changes (materialisation records its interval there) and entries also expire after
``max_age_s`` (for registries that are not a local file). TTL is judged on each request from the
value's own timestamp, cached or not.
"""
from __future__ import annotations

import os
import time
from itertools import repeat
from pathlib import Path

import numpy as np

from mmfs.online.columns import ItemRows, decode_rows
from mmfs.online.reader import MISSING_US, OnlineReader
from mmfs.online.rows import RawRows


class ItemColumns:
    """One item view's cached rows as arrays: a slot per item, reused first-in first-out once
    ``capacity`` items are held. The arrays grow by doubling up to ``capacity``."""

    def __init__(self, features: dict[str, int], capacity: int):
        self.features, self.capacity = features, capacity
        self.slot: dict[int, int] = {}
        self.size = self.cursor = 0
        self._allocate(min(capacity, 1024))

    def _allocate(self, rows: int) -> None:
        old = getattr(self, "rows", None)
        fresh = decode_rows(RawRows([MISSING_US] * rows, {f: [None] * rows for f in self.features}), self.features)
        if old is not None:
            n = len(old.stamps_us)
            for f in self.features:
                fresh.values[f][:n], fresh.found[f][:n] = old.values[f], old.found[f]
            fresh.stamps_us[:n] = old.stamps_us
            fresh_owner = np.full(rows, -1, np.int64)
            fresh_owner[:n] = self.owner
            self.owner = fresh_owner
        else:
            self.owner = np.full(rows, -1, np.int64)
        self.rows = fresh

    def lookup(self, ids: list[int]) -> np.ndarray:
        """(N,) slots of ``ids``, -1 where not cached."""
        return np.fromiter(map(self.slot.get, ids, repeat(-1)), np.int64, len(ids))

    def insert(self, ids: list[int], rows: ItemRows) -> None:
        """Cache ``rows`` (aligned with the distinct ``ids``), evicting the oldest items when full."""
        if len(ids) > self.capacity:
            ids, rows = ids[-self.capacity:], rows.take(np.arange(len(ids) - self.capacity, len(ids)))
        n = len(ids)
        if self.size + n > len(self.rows.stamps_us) and len(self.rows.stamps_us) < self.capacity:
            self._allocate(min(self.capacity, max(2 * len(self.rows.stamps_us), self.size + n)))
        if self.size + n <= self.capacity:
            slots = np.arange(self.size, self.size + n)
            self.size += n
        else:  # full: reuse the oldest slots, and forget the items that held them
            slots = (self.cursor + np.arange(n)) % self.capacity
            self.cursor = int((self.cursor + n) % self.capacity)
            for old, s in zip(self.owner[slots].tolist(), slots.tolist()):
                if self.slot.get(old) == s:  # not re-cached elsewhere since
                    del self.slot[old]
        for f in self.features:
            self.rows.values[f][slots], self.rows.found[f][slots] = rows.values[f], rows.found[f]
        self.rows.stamps_us[slots] = rows.stamps_us
        self.owner[slots] = ids
        self.slot.update(zip(ids, slots.tolist()))

    def discard(self, item: int) -> None:
        """Forget ``item`` (its slot is reused in its turn)."""
        self.slot.pop(item, None)

    def clear(self) -> None:
        """Forget every item; the arrays stay allocated."""
        self.slot.clear()
        self.size = self.cursor = 0


class ItemFeatureCache:
    """The item views' cached rows (one ``ItemColumns`` per view), with hit, miss and invalidation counts.

    Cleared when the Feast registry file changes (materialisation records its interval there) and
    when older than ``max_age_s`` (the bound for registries that are not a local file)."""

    def __init__(self, store, maxsize: int, max_age_s: float):
        self.enabled = maxsize > 0
        self.maxsize = maxsize
        self.max_age_s = max_age_s
        self.columns: dict[str, ItemColumns] = {}
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
        for columns in self.columns.values():
            columns.clear()
        self.filled_at = time.monotonic()
        self.invalidations += 1

    def view(self, view: str, features: dict[str, int]) -> ItemColumns | None:
        """``view``'s columns (made on first use); None when the cache is disabled."""
        if not self.enabled:
            return None
        if view not in self.columns:
            self.columns[view] = ItemColumns(features, self.maxsize)
        return self.columns[view]

    def discard(self, item: int) -> None:
        """Drop ``item`` from every view."""
        for columns in self.columns.values():
            columns.discard(item)


class ItemFeatures:
    """The item views of a service, read by item id: cached rows first, the rest in one online read
    per view. ``features[view]`` names the features wanted from each view with their vector length
    (0: a scalar); every other view gives its rows' event times only (for statuses)."""

    def __init__(self, reader: OnlineReader, cache: ItemFeatureCache, features: dict[str, dict[str, int]]):
        self.reader, self.cache = reader, cache
        self.views = [v for v, (fv, _) in reader.views.items() if tuple(fv.join_keys) == ("item_id",)]
        self.features = {view: dict(features.get(view, {})) for view in self.views}

    def read(self, view: str, ids: list[int]) -> ItemRows:
        """``view``'s rows for ``ids`` (in order, duplicates allowed)."""
        features = self.features[view]
        columns = self.cache.view(view, features)
        if columns is None:
            distinct = list(dict.fromkeys(ids))
            self.cache.misses += len(ids)
            rows = self._fetch(view, distinct)
            return rows if len(distinct) == len(ids) else rows.take(self._positions(distinct, ids))
        slots = columns.lookup(ids)
        missed = slots < 0
        n_missed = int(missed.sum())
        self.cache.misses += n_missed
        self.cache.hits += len(ids) - n_missed
        if not n_missed:
            return columns.rows.take(slots)
        # Answer first (cached rows, then the ones just read), then cache what was read.
        lost = np.flatnonzero(missed)
        missed_ids = np.asarray(ids, np.int64)[lost].tolist()
        distinct = list(dict.fromkeys(missed_ids))
        fresh = self._fetch(view, distinct)
        out = columns.rows.take(np.maximum(slots, 0))
        part = fresh.take(self._positions(distinct, missed_ids))
        for f in features:
            out.values[f][lost], out.found[f][lost] = part.values[f], part.found[f]
        out.stamps_us[lost] = part.stamps_us
        columns.insert(distinct, fresh)
        return out

    def _fetch(self, view: str, ids: list[int]) -> ItemRows:
        """``view``'s rows for the distinct ``ids`` from the store: the wanted features, or (none wanted)
        the whole projection, whose rows tell present from missing."""
        features = self.features[view]
        return decode_rows(self.reader.read_raw(view, ids, list(features) or None), features)

    @staticmethod
    def _positions(distinct: list[int], ids: list[int]) -> np.ndarray:
        at = {item: k for k, item in enumerate(distinct)}
        return np.fromiter(map(at.__getitem__, ids), np.int64, len(ids))

    def invalidate(self, item_id: int) -> None:
        """Drop ``item_id``'s cached rows in every item view."""
        self.cache.discard(item_id)

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

import json
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from pathlib import Path

import numpy as np

from feast.protos.feast.types.Value_pb2 import FloatList, Value as ValueProto

from mmfs.online.reader import MISSING_US, OnlineReader, float_list
from mmfs.online.rows import RawRows


@dataclass
class ItemRows:
    """One item view's rows for a list of ids, in the ids' order (duplicates allowed)."""

    values: dict[str, np.ndarray]  # vector feature -> (N, D) float32, zeros where absent; scalar -> (N,) float64, 0 where absent
    found: dict[str, np.ndarray]  # feature -> (N,) bool: the row holds the feature (a vector of the expected length)
    stamps_us: np.ndarray  # (N,) int64 event time, microseconds since the epoch; MISSING_US where the store has no row

    def take(self, index: np.ndarray) -> "ItemRows":
        """The rows at ``index``, in that order."""
        return ItemRows({f: v[index] for f, v in self.values.items()}, {f: m[index] for f, m in self.found.items()},
                        self.stamps_us[index])


def decode_rows(raw: RawRows, features: dict[str, int]) -> ItemRows:
    """A view's ``RawRows`` -> ``ItemRows``; ``features`` maps each wanted feature to its vector
    length (0 for a scalar)."""
    values, found = {}, {}
    for f, dim in features.items():
        values[f], found[f] = float_lists(raw.values[f], dim) if dim else scalars(raw.values[f])
    return ItemRows(values, found, np.asarray(raw.stamps_us, np.int64))


@lru_cache(maxsize=64)
def _float_list_header(dim: int) -> bytes:
    """The bytes before the floats in a serialised ValueProto holding ``dim`` floats."""
    return ValueProto(float_list_val=FloatList(val=[0.0] * dim)).SerializeToString()[: -4 * dim]


def float_lists(blobs: list[bytes | None], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, dim) float32 vectors and their (N,) found mask from serialised ``float_list_val``
    ValueProtos, decoded together: every blob of the expected size and header is one row of one
    byte matrix, its floats read in place. Anything else is parsed alone; a vector of another
    length is not found."""
    n = len(blobs)
    out, found = np.zeros((n, dim), np.float32), np.zeros(n, bool)
    header = _float_list_header(dim)
    size = len(header) + 4 * dim
    lengths = np.fromiter((len(b) if b is not None else 0 for b in blobs), np.int64, n)
    at = np.flatnonzero(lengths == size)
    if at.size:
        block = np.frombuffer(b"".join([blobs[k] for k in at.tolist()]), np.uint8).reshape(at.size, size)  # (m, size)
        ok = (block[:, : len(header)] == np.frombuffer(header, np.uint8)).all(axis=1)
        out[at[ok]] = block[ok, len(header):].copy().view(np.float32)  # (m, dim)
        found[at[ok]] = True
    for k in np.flatnonzero((lengths > 0) & ~found).tolist():  # another encoding or length: parsed alone
        vector = float_list(ValueProto.FromString(blobs[k]))
        if vector is not None and vector.shape[0] == dim:
            out[k], found[k] = vector, True
    return out, found


FIXED_SCALARS = {0x35: (5, np.float32), 0x29: (9, np.float64)}  # float_val, double_val: tag byte -> (size, dtype)
NUMERIC_KINDS = ("int64_val", "int32_val", "float_val", "double_val", "bool_val")
VARINT_SCALARS = (0x20, 0x18, 0x38)  # int64_val, int32_val, bool_val (field numbers 4, 3, 7, wire type 0)


def scalars(blobs: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """(N,) float64 values and their found mask from serialised scalar ValueProtos, decoded
    together by their tag byte and size (one numpy pass per kind and length). Anything else is
    parsed alone; a list or a string is not a scalar."""
    n = len(blobs)
    values, found = np.zeros(n), np.zeros(n, bool)
    lengths = np.fromiter((len(b) if b is not None else 0 for b in blobs), np.int64, n)
    for size in np.unique(lengths[lengths > 1]).tolist():
        at = np.flatnonzero(lengths == size)
        block = np.frombuffer(b"".join([blobs[k] for k in at.tolist()]), np.uint8).reshape(at.size, size)  # (m, size)
        for tag, (fixed, dtype) in FIXED_SCALARS.items():
            rows = at[block[:, 0] == tag] if fixed == size else at[:0]
            if rows.size:
                values[rows] = block[block[:, 0] == tag, 1:].copy().view(dtype)[:, 0]
                found[rows] = True
        varint = np.isin(block[:, 0], VARINT_SCALARS) & (block[:, -1] < 0x80) & (block[:, 1:-1] >= 0x80).all(axis=1)
        if varint.any():  # base-128 digits, low first; ten bytes: a negative int64
            digits = (block[varint, 1:].astype(np.uint64) & np.uint64(0x7F)) << (np.uint64(7) * np.arange(size - 1, dtype=np.uint64))
            values[at[varint]] = np.bitwise_or.reduce(digits, axis=1).view(np.int64)
            found[at[varint]] = True
    for k in np.flatnonzero((lengths > 0) & ~found).tolist():  # another kind or encoding: parsed alone
        proto = ValueProto.FromString(blobs[k])
        kind = proto.WhichOneof("val")
        if kind in NUMERIC_KINDS:
            values[k], found[k] = getattr(proto, kind), True
    return values, found


def put_bounded(entries: dict, maxsize: int, key, value) -> None:
    """``entries[key] = value``, first evicting the oldest tenth (insertion order) when full."""
    if len(entries) >= maxsize:
        for old in list(entries)[: max(1, maxsize // 10)]:
            del entries[old]
    entries[key] = value


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


class ChangedItems:
    """``mmfs stream``'s changed-items file, followed by offset: one JSON line per applied micro-batch
    (``{"batch": ..., "items": [...]}``). ``new_items`` costs one ``stat`` when nothing changed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = self.path.stat().st_size if self.path.is_file() else 0  # what was applied before start is online already

    def new_items(self) -> list[int]:
        """The items of the batches applied since the last call."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:  # the file was replaced: read it all again
            self.offset = 0
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        complete = data.rfind(b"\n") + 1  # a line being appended is read next time
        self.offset += complete
        return [int(i) for line in data[:complete].splitlines() if line.strip() for i in json.loads(line)["items"]]

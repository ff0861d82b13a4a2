"""Online feature reads for one feature service, with TTL honoured.

Feast's Python ``get_online_features`` returns values older than their view's TTL as present
(feast issue 6821). ``OnlineReader`` reads the same online store through the provider's
``online_read`` (SQLite, Redis, ...: whatever the config names), gets each row's event timestamp
and marks a value older than ``now - ttl`` as ``stale``: it is returned, but never as fresh.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from mmfs.online.rows import EPOCH, MISSING_US, RawRows, fast_rows, reopen_if_replaced

PRESENT, MISSING, STALE, FUTURE = "present", "missing", "stale", "future"
STATUS_NAMES = (PRESENT, STALE, MISSING, FUTURE)  # indexed by the codes of OnlineReader.status_codes
PRESENT_CODE, STALE_CODE, MISSING_CODE, FUTURE_CODE = 0, 1, 2, 3
ONE_US = dt.timedelta(microseconds=1)


def stamp_us(ts: dt.datetime | None) -> int:
    """An aware timestamp as microseconds since the epoch; ``MISSING_US`` for None."""
    return MISSING_US if ts is None else (ts - EPOCH) // ONE_US


def float_list(proto: ValueProto) -> np.ndarray | None:
    """A ``float_list_val`` as a float32 array read straight from its packed bytes (no Python list
    in between); None for another kind."""
    if proto.WhichOneof("val") != "float_list_val":
        return None
    packed = proto.float_list_val.SerializeToString()  # field 1, wire type 2: 0x0a, varint length, the floats
    if not packed:
        return np.zeros(0, np.float32)
    start = 1
    while packed[start] & 0x80:
        start += 1
    return np.frombuffer(packed, np.float32, offset=start + 1)


class StoreUnavailable(RuntimeError):
    """The online store cannot answer (down, locked, its file missing): a server error, never the client's."""


def store_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean the online store failed, as opposed to a bug or a bad request."""
    import sqlite3

    kinds: list[type[BaseException]] = [StoreUnavailable, sqlite3.Error, OSError, ConnectionError, TimeoutError]
    try:
        from redis.exceptions import RedisError

        kinds.append(RedisError)
    except ImportError:
        pass
    return tuple(kinds)


def probe_store(reader: "OnlineReader", view: str) -> None:
    """One cheap read of ``view``: returns when the online store answers, raises ``StoreUnavailable``
    otherwise. For SQLite it first tells a missing file from an empty one (and never creates one),
    and reopens the connection when the file was replaced or the last read failed."""
    online = reader.provider.online_store
    config = reader.store.config
    if config.online_store.type == "sqlite":
        import os

        path = online._get_db_path(config)  # noqa: SLF001 - Feast's own path rule
        if not os.path.exists(path):
            raise StoreUnavailable(f"the SQLite online store file is missing: {path}")
        reopen_if_replaced(online, config)
    try:
        reader.read(view, [0])
    except store_errors() as exc:
        if config.online_store.type == "sqlite" and getattr(online, "_conn", None) is not None:
            online._conn.close()  # a fresh connection next time (a lock or a schema change may have passed)
            online._conn = None
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class ViewRows:
    """One online view's rows for a list of entity keys, in request order."""

    view: str
    values: dict[str, list]  # feature -> one value per key (None where missing)
    status: list[str]  # present | missing | stale | future, per key
    event_timestamps: list[dt.datetime | None]

    def fresh(self, feature: str) -> list:
        """Values with stale and missing ones as None."""
        return [v if s == PRESENT else None for v, s in zip(self.values[feature], self.status)]


class OnlineReader:
    """Reads the online views of ``service_name`` from ``store``'s online store."""

    def __init__(self, store, service_name: str):
        self.store = store
        self.service_name = service_name
        service = store.get_feature_service(service_name)
        self.views = {}
        self.offline_only = []
        for projection in service.feature_view_projections:
            fv = store.get_feature_view(projection.name)
            if fv.online:
                self.views[fv.name] = (fv, [f.name for f in projection.features])
            else:
                self.offline_only.append(fv.name)
        self.provider = store._get_provider()  # noqa: SLF001 - Feast's own online-store reader
        self.fast = fast_rows(store, self.provider.online_store)
        # Read once: Feast's properties re-check their types on every access (typeguard).
        self.join_keys = {view: tuple(fv.join_keys) for view, (fv, _) in self.views.items()}
        self._ttl = {view: self._view_ttl(fv) for view, (fv, _) in self.views.items()}

    @staticmethod
    def _view_ttl(fv) -> dt.timedelta | None:
        ttl = fv.ttl
        return ttl if ttl and ttl.total_seconds() > 0 else None

    def ttl(self, view: str) -> dt.timedelta | None:
        """``view``'s TTL, or None when it has none (zero)."""
        return self._ttl[view]

    def read_raw(self, view: str, keys: Sequence[int] | Sequence[tuple[int, ...]], features: Sequence[str] | None = None) -> RawRows:
        """The one online read: ``view``'s rows for ``keys`` (an int, or a tuple per join key) as
        stored, each wanted feature's serialised ValueProto and each row's event time in us
        (``RawRows``). ``features``: a subset of the projection's (default all). SQLite and Redis
        are read by ``mmfs.online.rows`` (Feast's layout, fewer steps); any other store through
        Feast's provider ``online_read``."""
        fv, projected = self.views[view]
        features = list(projected if features is None else features)
        join_keys = self.join_keys[view]
        tuples = [key if isinstance(key, tuple) else (key,) for key in keys]
        for key in tuples:
            if len(key) != len(join_keys):
                raise ValueError(f"{view} is keyed by {list(join_keys)}, got key {key!r}")
        if self.fast is not None:
            return self.fast.raw(fv, join_keys, features, tuples)
        values: dict[str, list] = {f: [] for f in features}
        stamps = []
        for event_ts, data in self.feast_rows(view, tuples, features):
            stamps.append(stamp_us(event_ts))
            for f in features:
                proto = data.get(f) if data is not None else None
                values[f].append(proto.SerializeToString() if proto is not None and proto.WhichOneof("val") else None)
        return RawRows(stamps, values)

    def read_rows(self, view: str, keys: Sequence[int] | Sequence[tuple[int, ...]],
                  features: Sequence[str] | None = None) -> list[tuple[dt.datetime | None, dict | None]]:
        """``read_raw``'s rows as Feast's ``online_read`` gives them: (aware timestamp, {feature:
        ValueProto}) or (None, None) where the key is absent."""
        return [row_or_missing(event_ts, data) for event_ts, data in self.read_raw(view, keys, features).rows()]

    def feast_rows(self, view: str, keys: Sequence[int] | Sequence[tuple[int, ...]],
                   features: Sequence[str] | None = None) -> list[tuple[dt.datetime | None, dict | None]]:
        """``view``'s rows through Feast's provider ``online_read`` itself: the path for stores
        ``mmfs.online.rows`` does not read, and what ``read_rows`` must equal for those it does."""
        fv, projected = self.views[view]
        join_keys = list(self.join_keys[view])
        entity_keys = [EntityKeyProto(join_keys=join_keys, entity_values=[ValueProto(int64_val=int(p)) for p in
                                                                          (key if isinstance(key, tuple) else (key,))]) for key in keys]
        rows = self.provider.online_read(config=self.store.config, table=fv, entity_keys=entity_keys,
                                          requested_features=list(projected if features is None else features))  # Redis appends to the list it gets
        return [row_or_missing(event_ts, data) for event_ts, data in rows]

    def read(self, view: str, keys: Sequence[int] | Sequence[tuple[int, ...]], now: dt.datetime | None = None) -> ViewRows:
        """``view``'s decoded values for ``keys``, each present, stale (older than the view's TTL
        at ``now``), future (stamped after ``now``) or missing."""
        _, features = self.views[view]
        now = now or dt.datetime.now(dt.timezone.utc)
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        rows = self.read_rows(view, keys)
        values = {f: [] for f in features}
        stamps = []
        for event_ts, data in rows:
            stamps.append(event_ts)
            for f in features:
                proto = data.get(f) if data is not None else None
                values[f].append(None if proto is None or proto.WhichOneof("val") is None else decode(proto))
        return ViewRows(view, values, self.statuses(view, stamps, now), stamps)

    def status_codes(self, view: str, stamps_us: np.ndarray, now: dt.datetime) -> np.ndarray:
        """The one point-in-time rule, per row: ``PRESENT_CODE``; ``FUTURE_CODE`` (stamped after
        ``now``: the online store holds each key's newest value only, and a replay at an earlier
        ``now`` must not take it for that time's); ``STALE_CODE`` (older than the view's TTL at
        ``now``); ``MISSING_CODE`` (no row, ``MISSING_US``), for (N,) int64 event times."""
        stamps_us = np.asarray(stamps_us, np.int64)
        codes = np.where(stamps_us == MISSING_US, MISSING_CODE, PRESENT_CODE).astype(np.int8)
        codes[(codes == PRESENT_CODE) & (stamps_us > stamp_us(now))] = FUTURE_CODE
        ttl = self.ttl(view)
        if ttl is not None:
            codes[(codes == PRESENT_CODE) & (stamps_us < stamp_us(now - ttl))] = STALE_CODE
        return codes

    def statuses(self, view: str, stamps: list[dt.datetime | None], now: dt.datetime) -> list[str]:
        """present | stale | missing | future per row stamp, by ``status_codes``."""
        codes = self.status_codes(view, np.fromiter(map(stamp_us, stamps), np.int64, len(stamps)), now)
        return [STATUS_NAMES[c] for c in codes.tolist()]


def row_or_missing(event_ts, data) -> tuple[dt.datetime | None, dict | None]:
    """One online_read row as (aware timestamp, features) or (None, None) when the key is absent.

    Redis answers an unknown key with an empty row (and a zero timestamp), SQLite with None."""
    if data is None or event_ts is None or not any(p is not None and p.WhichOneof("val") for p in data.values()):
        return None, None
    return (event_ts if event_ts.tzinfo else event_ts.replace(tzinfo=dt.timezone.utc)), data


def decode(proto: ValueProto):
    """A Feast ValueProto -> Python value (lists as lists)."""
    kind = proto.WhichOneof("val")
    if kind is None:
        return None
    if kind.endswith("_list_val"):
        return list(getattr(proto, kind).val)
    if kind in ("unix_timestamp_val", "string_val", "bytes_val"):
        return feast_value_type_to_python_type(proto)
    return getattr(proto, kind)

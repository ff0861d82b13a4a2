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

from serving.online_fast import EPOCH, MISSING_US, RawRows, fast_rows

PRESENT, MISSING, STALE = "present", "missing", "stale"
STATUS_NAMES = (PRESENT, STALE, MISSING)  # indexed by the codes of OnlineReader.status_codes
PRESENT_CODE, STALE_CODE, MISSING_CODE = 0, 1, 2
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
        inode = os.stat(path).st_ino
        conn = getattr(online, "_conn", None)
        if conn is not None and getattr(online, "_mmfs_inode", inode) != inode:  # replaced under us: reopen
            conn.close()
            online._conn = None
        online._mmfs_inode = inode
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
    status: list[str]  # present | missing | stale, per key
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
        are read by ``serving.online_fast`` (Feast's layout, fewer steps); any other store through
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
        ``online_fast`` does not read, and what ``read_rows`` must equal for those it does."""
        fv, projected = self.views[view]
        join_keys = list(self.join_keys[view])
        entity_keys = [EntityKeyProto(join_keys=join_keys, entity_values=[ValueProto(int64_val=int(p)) for p in
                                                                          (key if isinstance(key, tuple) else (key,))]) for key in keys]
        rows = self.provider.online_read(config=self.store.config, table=fv, entity_keys=entity_keys,
                                          requested_features=list(projected if features is None else features))  # Redis appends to the list it gets
        return [row_or_missing(event_ts, data) for event_ts, data in rows]

    def read(self, view: str, keys: Sequence[int] | Sequence[tuple[int, ...]], now: dt.datetime | None = None) -> ViewRows:
        """``view``'s decoded values for ``keys``, each present, stale (older than the view's TTL
        at ``now``) or missing."""
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
        """The one TTL rule, per row: ``PRESENT_CODE``, ``STALE_CODE`` (older than the view's TTL at
        ``now``) or ``MISSING_CODE`` (no row, ``MISSING_US``), for (N,) int64 event times."""
        stamps_us = np.asarray(stamps_us, np.int64)
        codes = np.where(stamps_us == MISSING_US, MISSING_CODE, PRESENT_CODE).astype(np.int8)
        ttl = self.ttl(view)
        if ttl is not None:
            codes[(codes == PRESENT_CODE) & (stamps_us < stamp_us(now - ttl))] = STALE_CODE
        return codes

    def statuses(self, view: str, stamps: list[dt.datetime | None], now: dt.datetime) -> list[str]:
        """present | stale | missing per row stamp, by ``status_codes``."""
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


def embedding_view(reader) -> str:
    """The service's item embedding view: item_embeddings, or a backfill's item_embeddings_v2."""
    from pipelines.store.feast_store import EMBEDDING_VIEW, embedding_view as embedding_view_of

    return embedding_view_of(reader.views) or EMBEDDING_VIEW


def online_similarities(reader: OnlineReader, user_id: int, item_ids: Sequence[int], now: dt.datetime | None = None,
                        vector: str = "mm_emb") -> tuple[list[int], "np.ndarray", "np.ndarray"]:
    """Request-time s_j for one user and C candidates from the online store.

    Returns the user's history ids, (C, L) similarities and their (C, L) known-mask (false where
    the candidate or history item has no fresh embedding). Uses the shared similarity function.
    """
    import numpy as np

    from pipelines.features.similarity import target_similarity

    seq = reader.read("user_sequence", [user_id], now)
    hist = seq.fresh("hist_item_ids")[0] or []
    emb = reader.read(embedding_view(reader), list(item_ids) + list(hist), now)
    vectors = emb.fresh(vector)
    dim = next((len(v) for v in vectors if v), 0)
    block = np.zeros((len(vectors), dim), dtype=np.float32)
    found = np.array([bool(v) for v in vectors])
    if dim:
        block[found] = np.array([v for v in vectors if v], dtype=np.float32)
    C = len(item_ids)
    target, history = block[:C], block[C:][None]  # (C, D), (1, L, D)
    hist_found = found[C:][None]  # (1, L)
    sims = target_similarity(target, history, hist_found) if dim else np.zeros((C, len(hist)), np.float32)
    known = found[:C, None] & hist_found  # (C, L)
    return list(hist), sims, known


def main(argv: list[str] | None = None) -> int:
    """``mmfs online-read``: print one user's online features and some items', TTL status included."""
    import argparse

    from rich.console import Console
    from rich.table import Table

    from pipelines.store.feast_store import REPO, open_store, parse_time

    parser = argparse.ArgumentParser(prog="mmfs online-read", description=main.__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", type=int, required=True)
    parser.add_argument("--items", default="", help="comma-separated item ids (default: the user's last 3 history items)")
    parser.add_argument("--service", default="ctr_dmf_v1")
    parser.add_argument("--config", default="duckdb")
    parser.add_argument("--repo", default=str(REPO))
    parser.add_argument("--at", type=parse_time, default=None, help="read as of this UTC time (default now)")
    args = parser.parse_args(argv)
    reader = OnlineReader(open_store(args.config, args.repo, args.root), args.service)
    console = Console()
    seq = reader.read("user_sequence", [args.user], args.at)
    hist = seq.values["hist_item_ids"][0] or []
    console.print(f"user {args.user}: sequence ({seq.status[0]}) stamped {seq.event_timestamps[0]}, "
                  f"{len(hist)} items, newest last: {hist[-10:]}", markup=False)
    items = [int(x) for x in args.items.split(",") if x] or hist[-3:]
    table = Table(title=f"items ({args.service}, {store_name(reader)})")
    for column in ("item", "view", "status", "as of", "features"):
        table.add_column(column)
    for view in [v for v in reader.views if v != "user_sequence"]:
        rows = reader.read(view, items, args.at)
        for i, item in enumerate(items):
            shown = {f: _short(v[i]) for f, v in rows.values.items()}
            table.add_row(str(item), view, rows.status[i], str(rows.event_timestamps[i]), str(shown))
    console.print(table)
    if items and embedding_view(reader) in reader.views:
        _, sims, known = online_similarities(reader, args.user, items, args.at)
        for item, s, k in zip(items, sims, known):
            console.print(f"s_j(target={item}) over the last 10 history items: "
                          f"{[round(float(x), 3) if ok else None for x, ok in zip(s[-10:], k[-10:])]}", markup=False)
    return 0


def store_name(reader: OnlineReader) -> str:
    """The online store's type (sqlite, redis, ...)."""
    return reader.store.config.online_store.type


def _short(value):
    if isinstance(value, list) and len(value) > 4:
        return f"[{', '.join(f'{x:.3f}' if isinstance(x, float) else str(x) for x in value[:3])}, ... ({len(value)})]"
    return round(value, 4) if isinstance(value, float) else value

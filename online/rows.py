"""Faster reads of Feast's own online stores, same layout: SQLite and Redis.

Feast's ``online_read`` pays, per request, for work that does not change between requests, and
for features nobody asked for:

- each entity key is serialised again (about 10 us a key: 12 ms for 1,250 candidates and history
  items). Here the serialised key is kept per entity, in a bounded map;
- SQLite: every feature of every row is read, parsed and its timestamp converted, whatever was
  requested. Here the query names the wanted features and the event time is parsed once per row.

The tables, keys and values are Feast's (its table naming, key serialisation and hash fields):
Feast still writes them, and ``OnlineReader.read_rows`` answers exactly what the provider's
``online_read`` answers (held by a test over every row, on SQLite and on a real Redis).
"""
from __future__ import annotations

import datetime as dt
import os

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

UTC = dt.timezone.utc
CACHE_KIB = 256 * 1024  # SQLite page cache per connection, filled on demand
# No memory map: a file truncated or rewritten in place under a map (`cp backup.db online_store.db`)
# kills the process with SIGBUS on the next read. Read through the page cache, a replaced file is a
# read error (503) and a reconnect.
MMAP_BYTES = 0
# How long a read waits on a lock (a writer's commit) before the store counts as unavailable (503):
# Python's sqlite3 waits 5 s, and a request held that long, then the readiness probe as long again.
BUSY_TIMEOUT_MS = 1000


def reopen_if_replaced(online, config) -> None:
    """Close Feast's SQLite connection when the file at its path is no longer the one it was opened
    on (a rename put another file, another inode, there): that connection would read the old file
    forever. A missing file raises ``FileNotFoundError`` (a 503) and is never created empty."""
    stat = os.stat(online._get_db_path(config))  # noqa: SLF001 - Feast's own path rule
    current = (stat.st_dev, stat.st_ino)
    if getattr(online, "_mmfs_file", current) != current and getattr(online, "_conn", None) is not None:
        online._conn.close()  # noqa: SLF001
        online._conn = None
    online._mmfs_file = current


class EntityKeys:
    """Serialised Feast entity keys, kept per (join keys, values); bounded (cleared when full)."""

    def __init__(self, version: int, suffix: bytes = b"", maxsize: int = 1_000_000):
        self.version, self.suffix, self.maxsize = version, suffix, maxsize
        self.cached: dict = {}

    def serialised(self, join_keys: tuple[str, ...], keys: list[tuple[int, ...]]) -> list[bytes]:
        """Each key's bytes (Feast's ``serialize_entity_key``, then ``suffix``)."""
        cached = self.cached
        out = [cached.get((join_keys, key)) for key in keys]
        for n in [n for n, b in enumerate(out) if b is None]:
            if len(cached) >= self.maxsize:
                cached.clear()
            proto = EntityKeyProto(join_keys=list(join_keys), entity_values=[ValueProto(int64_val=int(p)) for p in keys[n]])
            out[n] = cached[(join_keys, keys[n])] = serialize_entity_key(proto, entity_key_serialization_version=self.version) + self.suffix
        return out


MISSING_US = -(2 ** 63)  # the event time of a row the store does not hold
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


class RawRows:
    """One view's rows for a list of keys as the store holds them: each wanted feature's
    serialised ``ValueProto`` bytes (None where absent) and each row's event time in microseconds
    since the epoch (``MISSING_US`` where the store has no row)."""

    def __init__(self, stamps_us: list[int], values: dict[str, list[bytes | None]]):
        self.stamps_us, self.values = stamps_us, values

    def rows(self) -> list[tuple[dt.datetime | None, dict | None]]:
        """As Feast's ``online_read`` answers: (aware event time, {feature: ValueProto}) or (None, None)."""
        out = []
        for n, stamp in enumerate(self.stamps_us):
            if stamp == MISSING_US:
                out.append((None, None))
                continue
            data = {}
            for feature, blobs in self.values.items():
                proto = ValueProto()
                if blobs[n] is not None:
                    proto.ParseFromString(blobs[n])
                data[feature] = proto
            out.append((EPOCH + dt.timedelta(microseconds=stamp), data))
        return out


class SqliteRows:
    """Feast's SQLite online store, read by one query that names the wanted features."""

    def __init__(self, store, online_store):
        self.config, self.online = store.config, online_store
        self.keys = EntityKeys(store.config.entity_key_serialization_version)
        self._tuned = None
        self._views: dict[str, tuple[str, set[str]]] = {}  # view -> (quoted table name, feature names), read once

    def view(self, fv) -> tuple[str, set[str]]:
        """The view's table (Feast's naming, quoted) and its feature names."""
        if fv.name not in self._views:
            from feast.infra.online_stores.sqlite import _quote_id, _table_id

            table = _quote_id(_table_id(self.config.project, fv, self.config.registry.enable_online_feature_view_versioning))
            self._views[fv.name] = (table, {f.name for f in fv.features})
        return self._views[fv.name]

    def connection(self):
        """Feast's own connection, given a page cache (SQLite's default 2 MiB re-reads the embedding
        pages on every request) and no memory map the first time it is seen; reopened when the file
        was replaced by another (``reopen_if_replaced``)."""
        reopen_if_replaced(self.online, self.config)
        conn = self.online._get_conn(self.config)  # noqa: SLF001 - Feast's own connection (reopened after a failure)
        if conn is not self._tuned:
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._tuned = conn
        return conn

    def raw(self, fv, join_keys: tuple[str, ...], features: list[str], keys: list[tuple[int, ...]]) -> RawRows:
        """The wanted features' bytes and the rows' event times, per key.

        Feast's SQLite store keeps event times as whole seconds since the epoch; its own reader
        turns them into local time and labels that UTC, the same only on a machine whose clock is
        UTC (as servers and CI are). They are read here as what they are."""
        values: dict[str, list] = {f: [None] * len(keys) for f in features}
        stamps = [MISSING_US] * len(keys)
        if not keys:
            return RawRows(stamps, values)
        serialised = self.keys.serialised(join_keys, keys)
        position = {key: n for n, key in enumerate(serialised)}
        cursor = self.connection().cursor()
        # CAST: the epoch seconds as Feast wrote them, not converted into a datetime once per feature row.
        # Naming the features costs a probe per (key, feature): only done when some are not wanted.
        table, names = self.view(fv)
        every = set(features) >= names
        cursor.execute(f"SELECT entity_key, feature_name, value, CAST(event_ts AS INTEGER) FROM {table} "
                       f"WHERE entity_key IN ({','.join('?' * len(serialised))})"
                       + ("" if every else f" AND feature_name IN ({','.join('?' * len(features))})"),
                       serialised if every else [*serialised, *features])
        for entity, feature, value, seconds in cursor.fetchall():
            n = position[entity]
            stamps[n] = seconds * 1_000_000
            if feature in values:
                values[feature][n] = value
        if len(position) < len(serialised):  # a key asked twice: copy the first answer
            for n, key in enumerate(serialised):
                first = position[key]
                if first != n:
                    stamps[n] = stamps[first]
                    for f in features:
                        values[f][n] = values[f][first]
        return RawRows(stamps, values)


class RedisRows:
    """Feast's Redis online store: its own hash fields and pipelined HMGET, with the keys kept serialised."""

    def __init__(self, store, online_store):
        self.config, self.online = store.config, online_store
        self.keys = EntityKeys(store.config.entity_key_serialization_version, store.config.project.encode("utf-8"))
        self._fields: dict = {}

    def fields(self, fv, features: tuple[str, ...]) -> tuple[str, list]:
        """The view's stored name and the hash fields of ``features`` plus its timestamp field (Feast's)."""
        from feast.infra.online_stores.redis import _versioned_fv_name

        key = (fv.name, features)
        if key not in self._fields:
            name = _versioned_fv_name(fv, self.config)
            _, fields = self.online._generate_hset_keys_for_features(fv, list(features), fv_name_override=name)  # noqa: SLF001
            self._fields[key] = (name, fields)
        return self._fields[key]

    def raw(self, fv, join_keys: tuple[str, ...], features: list[str], keys: list[tuple[int, ...]]) -> RawRows:
        """The wanted features' bytes and the rows' event times (Feast's ``_ts:<view>`` field), per key."""
        from google.protobuf.timestamp_pb2 import Timestamp

        values: dict[str, list] = {f: [None] * len(keys) for f in features}
        stamps = [MISSING_US] * len(keys)
        if not keys:
            return RawRows(stamps, values)
        name, fields = self.fields(fv, tuple(features))
        serialised = self.keys.serialised(join_keys, keys)
        replies = self.online._read_hash_fields(self.config, [(key, fields) for key in serialised])  # noqa: SLF001
        for n, reply in enumerate(replies):
            if not any(reply[:-1]):
                continue  # no such key: every field empty
            for f, blob in zip(features, reply):
                values[f][n] = blob or None
            if reply[-1]:
                ts = Timestamp.FromString(reply[-1])
                stamps[n] = ts.seconds * 1_000_000 + ts.nanos // 1000
            else:
                stamps[n] = 0
        return RawRows(stamps, values)



def fast_rows(store, online_store):
    """The fast reader for ``store``'s online store type, or None (then Feast's ``online_read`` is used)."""
    kind = store.config.online_store.type
    if kind == "sqlite" and not getattr(store.config.online_store, "vector_enabled", False):
        return SqliteRows(store, online_store)
    if kind == "redis":
        return RedisRows(store, online_store)
    return None

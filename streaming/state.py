"""What the stream counts on from: each key's newest row of an offline table, kept in memory.

The offline tables are the record: the batch jobs wrote them and every micro-batch appends to them.
The online store is what they are served from, and it is not exact enough to count on (Feast's
SQLite store keeps event times in whole seconds; a table may be rewritten by a batch run before it
is materialised). So the stream continues each user's sequence and each key's running stats from
the newest offline row, whose stamp it knows to the microsecond.

``NewestRows`` loads one table once, then follows it: the files the stream appended itself update
it in memory (``update``); any other change to the folder (a batch job replaced the table, another
writer appended) reloads it on the next ``get``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmfs.core.files import Files, LocalFiles, basename, read_parquet


class NewestRows:
    """``key -> (stamp µs, values)``: the newest row per key of the table at ``path`` (see the module docstring)."""

    def __init__(self, path: str, key: str, columns: tuple[str, ...], files: Files | None = None):
        self.path = str(path)
        self.files = files or LocalFiles()
        self.key, self.columns = key, columns
        self.rows: dict[int, tuple[int, tuple]] = {}
        self.seen: frozenset | None = None  # (file name, mtime ms, size) of the files the rows reflect
        self.reloads = 0

    def _files(self) -> frozenset:
        return frozenset((e.name, e.mtime_ms, e.size) for e in self.files.list(self.path)
                         if not e.is_dir and e.name.endswith(".parquet") and e.name[:1] not in "._")

    def get(self, keys) -> dict[int, tuple[int, tuple]]:
        """The newest row of each of ``keys`` that has one."""
        files = self._files()
        if files != self.seen:
            self._load(files)
        return {k: self.rows[k] for k in keys if k in self.rows}

    def _load(self, files: frozenset) -> None:
        self.rows = {}
        self.seen = files
        self.reloads += 1
        if not files:
            return
        table = read_parquet(self.files, [self.files.join(self.path, name) for name, _, _ in sorted(files)],
                             columns=[self.key, "event_timestamp", *self.columns])
        self._merge(table)

    def _merge(self, table: pa.Table) -> None:
        """Keep, per key, the newest of the table's rows and the rows held."""
        if not table.num_rows:
            return
        stamps = pc.cast(pc.cast(table.column("event_timestamp"), pa.timestamp("us", "UTC")), pa.int64()).to_numpy()  # µs
        keys = table.column(self.key).to_numpy()
        order = np.lexsort((stamps, keys))
        last = order[np.r_[keys[order][1:] != keys[order][:-1], True]]  # each key's newest
        picked = table.take(pa.array(last))
        values = list(zip(*(picked.column(c).to_pylist() for c in self.columns)))
        for k, stamp, v in zip(keys[last].tolist(), stamps[last].tolist(), values):
            held = self.rows.get(k)
            if held is None or held[0] <= stamp:
                self.rows[k] = (stamp, v)

    def update(self, table: pa.Table | None, published: str | None) -> None:
        """The rows of a file the stream just published into the table: merged in memory, and the
        file counted as seen (so it does not trigger a reload)."""
        if table is None or published is None:
            return
        if self.seen is None:
            self.get([])
            return  # the load read the new file already
        self._merge(table.select([self.key, "event_timestamp", *self.columns]))
        name = basename(published)
        self.seen = self.seen | {f for f in self._files() if f[0] == name}

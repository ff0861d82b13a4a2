"""The scorer's caches beside the item features: the user side of a request (``UserSideCache``)
and ``mmfs stream``'s changed-items file, followed so the item cache drops what a micro-batch
changed (``ChangedItems``). ``put_bounded`` is the eviction rule both item and user caches use."""
from __future__ import annotations

import json
from pathlib import Path


def put_bounded(entries: dict, maxsize: int, key, value) -> None:
    """``entries[key] = value``, first evicting the oldest tenth (insertion order) when full."""
    if len(entries) >= maxsize:
        for old in list(entries)[: max(1, maxsize // 10)]:
            del entries[old]
    entries[key] = value


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

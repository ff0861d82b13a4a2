"""The event log's landing folder: ``POST /events`` validates the events and appends them here, and
``mmfs stream`` (Spark Structured Streaming's file source) applies them to the online store and
the offline tables. Nothing else in the web server writes a table.

One request is one file of JSON lines, one event per line::

    {"user_id": 1, "item_id": 14, "event_timestamp": "2020-08-01T00:00:00.000001+00:00", "label": 1}

written under a hidden name (``.<name>.tmp``, which Spark's file source skips) and published by
one rename, so the stream never reads half a file. Any producer may drop files in the same
format (locally, on S3 or HDFS); the stream checks every line again with the same rules
(``parse_line``) and quarantines the ones that break them, naming the rule.

The rules are ingest's own (``mmfs.core.events.rules``), plus ``item_known`` against the
items table.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from mmfs.core.contracts.names import LANDING_SUBDIR
from mmfs.core.files import Files, LocalFiles, join, read_parquet
from mmfs.core.events.rules import EVENT_KEY, LIVE_FUTURE_SLACK, event_violations

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Event:
    """One event as the event log carries it; ``event_timestamp`` is timezone-aware."""

    user_id: int
    item_id: int
    event_timestamp: dt.datetime
    label: int

    def to_json(self) -> str:
        return json.dumps({"user_id": self.user_id, "item_id": self.item_id,
                           "event_timestamp": self.event_timestamp.astimezone(UTC).isoformat(timespec="microseconds"),
                           "label": self.label})


class InvalidEvents(ValueError):
    """Events that break ingest's rules: ``problems`` holds one {"field", "rule", "error"} per
    broken rule (field ``events.<n>.<column>``)."""

    def __init__(self, problems: list[dict]):
        self.problems = problems
        super().__init__("; ".join(f"{p['field']}: {p['error']} ({p['rule']})" for p in problems))


def landing_dir(root: str | Path) -> Path:
    """The default landing folder of a table root."""
    return Path(root) / LANDING_SUBDIR


def problems_of(n: int, e: Event, known: set[int], now: dt.datetime) -> list[dict]:
    """Every rule event ``n`` breaks, as {"field": "events.<n>.<column>", "rule", "error"}."""
    out = []
    for rule, reason in event_violations(e.user_id, e.item_id, e.event_timestamp, e.label, e.item_id in known, now, LIVE_FUTURE_SLACK):
        column = "item_id" if rule == "item_known" else next(c for c in EVENT_KEY + ("label",) if rule.startswith(c))
        out.append({"field": f"events.{n}.{column}", "rule": rule, "error": reason})
    return out


def check_events(events: list[Event], known: set[int], now: dt.datetime) -> None:
    """``InvalidEvents`` naming every event, field and rule broken (``problems_of``); None when all are valid."""
    problems = [p for n, e in enumerate(events) for p in problems_of(n, e, known, now)]
    if problems:
        raise InvalidEvents(problems)


def parse_line(line: str, known: set[int], now: dt.datetime) -> tuple[Event | None, list[dict]]:
    """One landed line -> (the event, []) or (None, the broken rules). The same rules as a POST."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None, [{"field": "line", "rule": "json_object", "error": "the line is not a JSON object"}]
    if not isinstance(raw, dict):
        return None, [{"field": "line", "rule": "json_object", "error": "the line is not a JSON object"}]
    unknown = sorted(set(raw) - {*EVENT_KEY, "label"})
    if unknown:  # as POST /events refuses them: a misspelt field is not silently dropped
        return None, [{"field": name, "rule": "known_fields", "error": f"unknown field; an event has {list(EVENT_KEY) + ['label']}"}
                      for name in unknown]
    ts = raw.get("event_timestamp")
    try:
        ts = dt.datetime.fromisoformat(ts) if isinstance(ts, str) else None
    except ValueError:
        ts = None
    event = Event(raw.get("user_id"), raw.get("item_id"), ts, raw.get("label"))
    problems = [dict(p, field=p["field"].split(".", 2)[2]) for p in problems_of(0, event, known, now)]
    if problems:
        return None, problems
    return Event(event.user_id, event.item_id, ts.astimezone(UTC), event.label), []


class KnownItems:
    """The items table's ids (ingest's ``item_known``); a root without one falls back to the
    item_embeddings table's. Reloaded when the table is rewritten."""

    def __init__(self, root: str | Path, files: Files | None = None):
        self.root = str(root)
        self.files = files or LocalFiles()  # the root's file system (mmfs.core.files)
        self._items: tuple | None = None

    def ids(self) -> set[int]:
        for table in (join(self.root, "items"), join(self.root, "item_embeddings")):
            listing = [e for e in self.files.list(table) if e.name.endswith(".parquet") and e.name[:1] not in "._"]
            if not listing:
                continue
            stamp = tuple((e.name, e.mtime_ms, e.size) for e in listing)
            if self._items is None or self._items[:2] != (table, stamp):
                ids = read_parquet(self.files, [e.path for e in listing], columns=["item_id"]).column("item_id")
                self._items = (table, stamp, set(ids.to_pylist()))
            return self._items[2]
        return set()


class EventLanding:
    """Validates events and appends them to the landing folder (``land``)."""

    def __init__(self, root: str | Path, landing: str | Path | None = None):
        self.known = KnownItems(root)
        self.dir = Path(landing) if landing else landing_dir(root)

    def validate(self, events: list[Event], now: dt.datetime | None = None) -> None:
        """``InvalidEvents`` naming every event, field and rule broken; nothing is written then."""
        check_events(events, self.known.ids(), now or dt.datetime.now(UTC))

    def land(self, events: list[Event], now: dt.datetime | None = None) -> str:
        """Validate all, then write them as one file published by a rename; returns its name."""
        self.validate(events, now)
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"{dt.datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.json"
        pending = self.dir / f".{name}.tmp"
        with open(pending, "w") as f:
            f.write("".join(e.to_json() + "\n" for e in events))
            f.flush()
            os.fsync(f.fileno())
        os.replace(pending, self.dir / name)
        return name

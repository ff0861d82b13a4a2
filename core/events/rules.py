"""The rules an event must keep, written once: ``mmfs ingest`` turns them into Spark predicates
(``mmfs.pipelines.jobs.ingest.event_rules``), the scorer's ``POST /events`` checks each posted event with
``event_violations``. No pyspark here: the web server imports this module.

An event's key is (user_id, item_id, event_timestamp): ingest keeps one row per key and
quarantines the others as ``duplicate_key``; the feedback path treats a second event with a
recorded key as a retry (a no-op) and one with another label as a conflict.
"""
from __future__ import annotations

import datetime as dt

UTC = dt.timezone.utc
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=UTC)  # nothing earlier is a valid event or item version
FUTURE_SLACK = dt.timedelta(days=1)  # a batch file's clocks drift: up to a day after ingest's now
# POST /events and mmfs stream: clock skew only. The stream's late rule counts on from the newest
# instant of each user and item, so a click stamped ahead makes every other click on its item late
# until that time comes: a day would freeze an item for a day, two seconds for two seconds at most.
LIVE_FUTURE_SLACK = dt.timedelta(seconds=2)
INT64_MAX = 2 ** 63 - 1
EVENT_KEY = ("user_id", "item_id", "event_timestamp")


def utc(ts: dt.datetime) -> dt.datetime:
    """An aware UTC datetime; a naive one is read as UTC (as the tables do)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def latest_allowed(now: dt.datetime, slack: dt.timedelta = FUTURE_SLACK) -> dt.datetime:
    """The newest valid event or item-version time for a run at ``now`` (``slack`` ahead of it)."""
    return utc(now) + slack


def sql_time(ts: dt.datetime) -> str:
    """A UTC timestamp as Spark SQL's literal text (the Spark session runs in UTC)."""
    return utc(ts).strftime("%Y-%m-%d %H:%M:%S")


def reason(rule: str, now: dt.datetime, slack: dt.timedelta = FUTURE_SLACK) -> str:
    """Each rule's message, the same in the quarantine table and in a 422."""
    return {
        "user_id_integral": "user_id is missing or not a 64-bit integer",
        "user_id_in_range": "user_id must not be negative",
        "item_id_integral": "item_id is missing or not a 64-bit integer",
        "item_id_in_range": "item_id must not be negative",
        "event_timestamp_parseable": "event_timestamp is missing or not a timestamp",
        "event_timestamp_in_range": f"event_timestamp is outside [{sql_time(EARLIEST)}, {sql_time(latest_allowed(now, slack))}]"
                                    + (f" (at most {slack.total_seconds():g} s ahead of the clock)" if slack < FUTURE_SLACK else ""),
        "label_in_0_1": "label must be 0 or 1",
        "item_known": "item_id is not in the items table",
    }[rule]


EVENT_RULE_NAMES = ("user_id_integral", "user_id_in_range", "item_id_integral", "item_id_in_range", "event_timestamp_parseable",
                    "event_timestamp_in_range", "label_in_0_1", "item_known")


def _integral(value) -> int | None:
    """The value when it is a 64-bit integer, else None (as ingest's ``integral_sql``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not -INT64_MAX - 1 <= value <= INT64_MAX:
        return None
    return value


def event_violations(user_id, item_id, event_timestamp, label, item_known: bool, now: dt.datetime,
                     slack: dt.timedelta = FUTURE_SLACK) -> list[tuple[str, str]]:
    """(rule, reason) for every rule the event breaks, in ``EVENT_RULE_NAMES`` order; [] when valid.
    ``item_known``: the item is in the items table; ``slack``: how far after ``now`` an event may be
    (``LIVE_FUTURE_SLACK`` for a live event)."""
    broken = []
    user, item = _integral(user_id), _integral(item_id)
    if user is None:
        broken.append("user_id_integral")
    elif user < 0:
        broken.append("user_id_in_range")
    if item is None:
        broken.append("item_id_integral")
    elif item < 0:
        broken.append("item_id_in_range")
    if not isinstance(event_timestamp, dt.datetime) or event_timestamp.tzinfo is None:
        broken.append("event_timestamp_parseable")
    elif not EARLIEST <= event_timestamp <= latest_allowed(now, slack):
        broken.append("event_timestamp_in_range")
    if _integral(label) not in (0, 1):
        broken.append("label_in_0_1")
    if item is not None and not item_known:
        broken.append("item_known")
    return [(rule, reason(rule, now, slack)) for rule in broken]

"""Ingest's Spark rules and the feedback path's Python check are one set of rules: on the same
rows they break the same rules (ingest's quarantine row lists every rule its row broke)."""
import datetime as dt
import json

from mmfs.pipelines.jobs import ingest
from mmfs.core.events.rules import EVENT_RULE_NAMES, event_violations

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 1, 1, tzinfo=UTC)
KNOWN_ITEMS = {1, 2}
OK = dt.datetime(2021, 5, 1, 10, tzinfo=UTC)

CASES = [  # (user, item, time, label)
    (10, 1, OK, 1),
    (10, 2, NOW + dt.timedelta(hours=23), 0),  # within the day of clock slack
    (10, 1, dt.datetime(1900, 1, 1, tzinfo=UTC), 1),
    (10, 1, dt.datetime(2100, 1, 1, tzinfo=UTC), 1),
    (10, 1, dt.datetime(2300, 1, 1, tzinfo=UTC), 1),
    (10, 1, NOW + dt.timedelta(hours=25), 1),
    (-3, 1, OK, 1),
    (10, -1, OK, 1),
    (11, 999, OK, 1),  # unknown item
    (12, 1, OK, 2),
    (2 ** 63, 1, OK, 1),  # beyond int64
    (13, 2, dt.datetime(1970, 1, 1, tzinfo=UTC), 0),  # the first valid instant
]


def test_spark_and_python_break_the_same_rule_on_every_row(spark):
    items = spark.createDataFrame([(str(i), f"t{i}", "text", None, "2020-01-01 00:00:00") for i in sorted(KNOWN_ITEMS)],
                                  "item_id string, title string, text string, image_uri string, updated_at string")
    rows = [(str(u), str(i), t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), str(label)) for u, i, t, label in CASES]
    events = spark.createDataFrame(rows, "user_id string, item_id string, event_timestamp string, label string")
    result = ingest.transform(items, events, NOW, 1.0)
    spark_rule = {tuple(json.loads(r.row_json).values()): r.rule for r in result["quarantine_events"].collect()}
    kept = {(r.user_id, r.item_id) for r in result["events"].collect()}
    for case, row in zip(CASES, rows):
        broken = event_violations(*case, item_known=case[1] in KNOWN_ITEMS, now=NOW)
        python_rule = ",".join(rule for rule, _ in broken) or None
        assert spark_rule.get(row) == python_rule, (case, spark_rule.get(row), broken)
        assert (python_rule is None) == ((case[0], case[1]) in kept and row not in spark_rule)
    assert {r for rules in spark_rule.values() for r in rules.split(",")} >= {"event_timestamp_in_range", "user_id_in_range", "item_id_in_range", "item_known",
                                                "label_in_0_1", "user_id_integral"}


def test_reasons_are_the_quarantine_reasons():
    broken = dict(event_violations(-1, 5, dt.datetime(2300, 1, 1, tzinfo=UTC), 3, item_known=False, now=NOW))
    assert list(broken) == [r for r in EVENT_RULE_NAMES if r in broken]
    assert set(broken) == {"user_id_in_range", "event_timestamp_in_range", "label_in_0_1", "item_known"}
    assert "2026-01-02 00:00:00" in broken["event_timestamp_in_range"]
    rules = {r.name: r.reason for r in ingest.event_rules(NOW).rules}
    assert all(rules[name] == text for name, text in broken.items())
    assert event_violations(1, 1, dt.datetime(2021, 1, 1), 1, True, NOW)[0][0] == "event_timestamp_parseable"  # no time zone


def test_a_live_event_may_be_ahead_of_the_clock_by_the_skew_only():
    """A click stamped a day ahead froze its item: every other click on it was late until then. Live
    events (POST /events, the stream) may be ahead by clock skew only; a batch file keeps its day."""
    import datetime as dt

    from mmfs.core.events import landing, rules

    now = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc)
    ahead = lambda seconds: landing.Event(1, 2, now + dt.timedelta(seconds=seconds), 1)  # noqa: E731
    assert landing.problems_of(0, ahead(rules.LIVE_FUTURE_SLACK.total_seconds()), {2}, now) == []
    late = landing.problems_of(0, ahead(60), {2}, now)
    assert [p["rule"] for p in late] == ["event_timestamp_in_range"] and "at most 2 s ahead" in late[0]["error"]
    assert rules.event_violations(1, 2, now + dt.timedelta(hours=20), 1, True, now) == []  # ingest's batch window


def test_the_stream_refuses_what_post_events_refuses():
    """One landed line, checked as POST /events checks it: a boolean or float label, an id sent as a
    string and an unknown field are refused, each named."""
    import datetime as dt

    from mmfs.core.events.landing import parse_line

    now = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
    line = lambda **kw: __import__("json").dumps({"user_id": 1, "item_id": 2, "event_timestamp": "2024-04-01T00:00:00+00:00", "label": 1, **kw})  # noqa: E731
    assert parse_line(line(), {2}, now)[0] is not None
    for bad, rule in ((dict(label=True), "label_in_0_1"), (dict(label=1.0), "label_in_0_1"), (dict(user_id="1"), "user_id_integral"),
                      (dict(extra=3), "known_fields")):
        event, problems = parse_line(line(**bad), {2}, now)
        assert event is None and [p["rule"] for p in problems] == [rule], (bad, problems)

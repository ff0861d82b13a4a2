"""The stream's writer keeps the pipeline's contract: ingest's rules, one record per event key,
durable before visible, late events to the batch path, and batch jobs that run after it accept what it wrote."""
import datetime as dt
import os

import duckdb
import pytest

from mmfs.store import feast_store

from mmfs.pipelines.jobs import ingest, user_sequences
from mmfs.pipelines.spark.table_io import read_table
from mmfs.core.events.landing import Event, InvalidEvents
from mmfs.streaming import increment_log
from mmfs.streaming.increments import LOG, IncrementWriter
from mmfs.online.reader import OnlineReader
from tests.support.feast_tables import copy_repo, write_tables

UTC = dt.timezone.utc
AT = dt.datetime(2020, 8, 1, tzinfo=UTC)  # after everything online


@pytest.fixture
def fed(spark, tmp_path):
    """A fresh table root, applied and materialised, and a writer over it."""
    root = tmp_path / "tables"
    write_tables(spark, root)
    repo = copy_repo(tmp_path)
    feast_store.apply("duckdb", repo, root)
    store = feast_store.open_store("duckdb", repo, root)
    store.materialize(start_date=dt.datetime(2019, 1, 1, tzinfo=UTC), end_date=dt.datetime(2020, 7, 2, tzinfo=UTC))
    return {"root": root, "repo": repo, "store": store, "writer": IncrementWriter(store, root)}


def online(fed, view, key, at=AT + dt.timedelta(days=1)):
    rows = OnlineReader(fed["store"], "ctr_dmf_v1").read(view, [key], now=at)
    return {name: values[0] for name, values in rows.values.items()}


def offline_count(root, table, where):
    files = list((root / table).glob("*.parquet"))
    return duckdb.connect().execute(f"SELECT count(*) FROM read_parquet({[str(f) for f in files]}) WHERE {where}").fetchone()[0] if files else 0


def test_bad_events_are_refused_by_ingests_rules_and_nothing_is_written(fed):
    writer, root = fed["writer"], fed["root"]
    before = online(fed, "user_sequence", 1)
    bad = [Event(1, 14, AT, 1),  # fine on its own
           Event(1, 14, dt.datetime(1900, 1, 1, tzinfo=UTC), 1), Event(1, 14, dt.datetime(2300, 1, 1, tzinfo=UTC), 1),
           Event(1, 999, AT, 1), Event(-5, 14, AT, 1), Event(1, 14, AT + dt.timedelta(seconds=1), 2)]
    with pytest.raises(InvalidEvents) as excinfo:
        writer.record(bad)
    problems = {(p["field"], p["rule"]) for p in excinfo.value.problems}
    assert problems == {("events.1.event_timestamp", "event_timestamp_in_range"), ("events.2.event_timestamp", "event_timestamp_in_range"),
                        ("events.3.item_id", "item_known"), ("events.4.user_id", "user_id_in_range"), ("events.5.label", "label_in_0_1")}
    assert all(p["error"] for p in excinfo.value.problems)
    assert not (root / "feedback_events").exists() and not (root / LOG).exists()
    assert offline_count(root, "events", "user_id = 1 AND item_id = 14") == 1
    assert online(fed, "user_sequence", 1) == before


def test_duplicates_and_retries_are_no_ops_and_batch_jobs_accept_what_feedback_wrote(fed, spark):
    writer, root = fed["writer"], fed["root"]
    click = Event(2, 14, AT, 1)
    done = writer.record([click, click, click])
    assert (done["events"], done["duplicates"]) == (1, 2)
    assert writer.record([click])["duplicates"] == 1  # the client's retry
    assert IncrementWriter(fed["store"], root).record([click])["duplicates"] == 1  # and after a restart
    conflict = writer.record([Event(2, 14, AT, 0)])
    assert conflict["events"] == 0 and conflict["conflicts"] == [(Event(2, 14, AT, 0), 1)]
    assert online(fed, "user_sequence", 2)["hist_item_ids"] == [11, 14]
    assert online(fed, "item_stats", 14)["impressions"] == 2
    for table in ("events", "feedback_events"):
        assert offline_count(root, table, "user_id = 2 AND item_id = 14") == 1, table

    # The batch jobs run after feedback: their contracts hold.
    assert user_sequences.main(["--root", str(root)]) == 0
    merged = ingest.with_feedback(spark, read_table(spark, f"{root}/events"), str(root))
    assert merged.count() == merged.dropDuplicates(["user_id", "item_id", "event_timestamp"]).count() == offline_count(root, "events", "true")


def test_a_failure_after_the_commit_is_finished_by_the_retry_and_counted_once(fed, monkeypatch):
    writer, root, store = fed["writer"], fed["root"], fed["store"]
    real = increment_log.write_online
    calls = []

    def flaky(store, view, df):
        calls.append(view)
        if len(calls) == 2:  # the sequence is online, the stats are not
            raise OSError("disk full")
        return real(store, view, df)

    monkeypatch.setattr(increment_log, "write_online", flaky)
    click = Event(3, 12, AT, 1)
    with pytest.raises(OSError):
        writer.record([click])
    assert len(list((root / LOG).iterdir())) == 1  # committed, not yet applied
    monkeypatch.setattr(increment_log, "write_online", real)
    retry = IncrementWriter(store, root).record([click])  # after a restart: the log is finished first
    assert (retry["events"], retry["duplicates"]) == (0, 1)
    assert not list((root / LOG).iterdir())
    assert online(fed, "user_sequence", 3)["hist_item_ids"] == [10, 12]
    assert online(fed, "item_stats", 12)["impressions"] == 2 and online(fed, "user_stats", 3)["user_impressions"] == 3
    for table in ("events", "feedback_events", "item_stats", "user_stats", "user_sequence_snapshots"):
        assert offline_count(root, table, "event_timestamp >= '2020-08-01'::TIMESTAMPTZ") == 1, table


def test_a_failure_before_the_commit_leaves_nothing(fed, monkeypatch):
    writer, root = fed["writer"], fed["root"]
    before = online(fed, "item_stats", 12)
    real = writer.files.write_bytes

    def broken(path, data, sync=False):
        if path.endswith(increment_log.COMMITTED):  # the commit's marker
            raise OSError("crash before the commit")
        return real(path, data, sync)

    monkeypatch.setattr(writer.files, "write_bytes", broken)
    click = Event(3, 12, AT, 1)
    with pytest.raises(OSError, match="before the commit"):
        writer.record([click])
    assert online(fed, "item_stats", 12) == before and not (root / "feedback_events").exists()
    monkeypatch.setattr(writer.files, "write_bytes", real)
    assert writer.record([click])["events"] == 1  # the retry records it, once
    assert not list((root / LOG).iterdir())
    assert online(fed, "item_stats", 12)["impressions"] == before["impressions"] + 1


def test_late_events_go_to_the_batch_path_and_are_reported_never_applied_online(fed):
    writer, root = fed["writer"], fed["root"]
    before = online(fed, "user_sequence", 1), online(fed, "item_stats", 14)
    late = Event(1, 14, dt.datetime(2020, 1, 2, 12, tzinfo=UTC), 1)  # user 1 is online up to 2020-01-03
    on_time = Event(4, 12, AT, 1)
    done = writer.record([late, on_time])
    assert (done["events"], done["late"]) == (1, 1)
    assert (online(fed, "user_sequence", 1), online(fed, "item_stats", 14)) == before
    assert online(fed, "user_sequence", 4)["hist_item_ids"] == [12]
    assert offline_count(root, "late_events", "user_id = 1 AND item_id = 14") == 1
    assert offline_count(root, "feedback_events", "user_id = 1 AND item_id = 14") == 1  # the next ingest folds it in
    assert offline_count(root, "events", "user_id = 1 AND item_id = 14") == 1  # the batch's own row only
    assert writer.record([late])["duplicates"] == 1  # a replay of the batch: recorded once
    # One at the very instant of the newest online row is late too: that instant's rows are written.
    same_instant = writer.record([Event(5, 12, AT, 1)])
    assert (same_instant["events"], same_instant["late"]) == (0, 1)
    assert offline_count(root, "item_stats", "item_id = 12 AND event_timestamp > '2020-07-31'::TIMESTAMPTZ") == 1


def test_a_batch_whose_name_is_published_is_refused_and_kept(tmp_path):
    """The last guard behind the checkpoint generations: applying a committed batch never replaces a
    published file; the batch stays in the log, the file as it was."""
    import pyarrow as pa

    from mmfs.core.files import LocalFiles
    from mmfs.streaming import increment_log

    files = LocalFiles()
    increment_log.commit(files, str(tmp_path), "stream-g001-0000000000", {"events": pa.table({"x": [1]})})
    published = tmp_path / "events" / "stream-g001-0000000000.parquet"
    published.parent.mkdir()
    published.write_bytes(b"an earlier checkpoint's batch")
    with pytest.raises(increment_log.PublishedError, match="would overwrite"):
        increment_log.apply(files, str(tmp_path), "stream-g001-0000000000", None, [])
    assert published.read_bytes() == b"an earlier checkpoint's batch"
    assert (tmp_path / increment_log.LOG / "stream-g001-0000000000" / "events.parquet").is_file()

"""mmfs stream = batch: after the stream has applied the landed events (including a run killed with
SIGKILL mid-batch and restarted), the online store and the offline tables equal a full batch
recompute over the same events, for every user and every item."""
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from pyspark.sql import Row

from mmfs.pipelines.jobs import item_stats, target_similarity, user_sequences, user_stats
from mmfs.pipelines.spark.schemas import EVENTS_SCHEMA
from mmfs.store import feast_store
from mmfs.core.events.landing import Event, EventLanding
from mmfs.online.reader import OnlineReader
from mmfs.streaming.increment_log import CRASH_ENV
from tests.support.feast_tables import EVENTS, angle, copy_repo, embedding_rows, write_tables

REPO = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc
T = dt.datetime.fromisoformat


def stream(root: Path | str, repo: Path, crash: str | None = None, max_files: int = 1, cwd: Path | None = None,
           extra: tuple[str, ...] = (), env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``mmfs stream --available-now`` in its own process (a SIGKILL must not take the test with it)."""
    env = {**os.environ, **(env_extra or {})}  # PYTHONPATH kept: the mutants' copy maps mmfs through it
    env.pop(CRASH_ENV, None)
    if crash:
        env[CRASH_ENV] = crash
    return subprocess.run([sys.executable, "-m", "mmfs.cli", "stream", "--root", str(root), "--repo", str(repo), "--available-now",
                           "--max-files-per-trigger", str(max_files), "--conf", "spark.ui.enabled=false", *extra],
                          env=env, capture_output=True, text=True, timeout=600, cwd=cwd)


def applied_root(spark, tmp_path, events, embeddings) -> tuple[Path, Path]:
    root = tmp_path / "tables"
    write_tables(spark, root, events=events, embeddings=embeddings)
    repo = copy_repo(tmp_path)
    feast_store.apply("duckdb", repo, root)
    newest = max(T(e[2]) for e in events).replace(tzinfo=UTC)
    feast_store.open_store("duckdb", repo, root).materialize(start_date=dt.datetime(1990, 1, 1, tzinfo=UTC),
                                                             end_date=newest + dt.timedelta(seconds=1))
    return root, repo


def offline(root: Path, table: str, columns: str) -> set:
    return {tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in duckdb.connect().execute(
        f"SELECT {columns} FROM read_parquet('{root}/{table}/*.parquet')").fetchall()}


def assert_stream_equals_batch(spark, root: Path, repo: Path, all_events: list[tuple]) -> None:
    """Every table row and every online value the stream wrote = a full batch recompute over ``all_events``."""
    events = spark.createDataFrame([Row(user_id=u, item_id=i, event_timestamp=T(t), label=l) for u, i, t, l in all_events], EVENTS_SCHEMA)
    batch = user_sequences.transform(events, max_len=50)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")

    def rows(df, columns: str) -> set:
        con.register("t", df.toArrow())
        out = {tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in con.execute(f"SELECT {columns} FROM t").fetchall()}
        con.unregister("t")
        return out

    seq_cols = "user_id, epoch_us(event_timestamp), hist_item_ids, hist_ts_us, hist_len"
    ts_cols = lambda cols: f"{cols.split(',')[0]}, epoch_us(event_timestamp), {cols.split(',', 1)[1]}"  # noqa: E731
    assert offline(root, "events", "user_id, item_id, epoch_us(event_timestamp), label") == rows(
        events, "user_id, item_id, epoch_us(event_timestamp), label")
    assert offline(root, "user_sequence_snapshots", seq_cols) == rows(batch["user_sequence_snapshots"], seq_cols)
    event_seq = "user_id, item_id, epoch_us(event_timestamp), label, hist_item_ids, list_transform(hist_timestamps, lambda t: epoch_us(t))"
    assert offline(root, "sequences", event_seq) == rows(batch["sequences"], event_seq)
    for table, transform, cols in (("item_stats", item_stats.transform, "item_id, impressions, clicks, ctr"),
                                   ("user_stats", user_stats.transform, "user_id, user_impressions, user_clicks, user_ctr")):
        assert offline(root, table, ts_cols(cols)) == rows(transform(events), ts_cols(cols)), table
    emb = spark.read.parquet(str(root / "item_embeddings"))
    sims = target_similarity.transform(batch["sequences"], emb, "e")
    sim_cols = "user_id, item_id, epoch_us(event_timestamp), list_transform(hist_sim, lambda x: round(x, 5))"
    assert offline(root, "target_similarity", sim_cols) == rows(sims, sim_cols)

    # Online: every user's sequence and stats, every item's stats, as the batch's newest rows.
    reader = OnlineReader(feast_store.open_store("duckdb", repo, root), "ctr_dmf_v1")
    later = max(T(e[2]) for e in all_events).replace(tzinfo=UTC) + dt.timedelta(days=1)
    current = {r.user_id: list(r.hist_item_ids) for r in batch["user_sequence_current"].collect()}
    users = sorted({e[0] for e in all_events})
    got = reader.read("user_sequence", users, now=later)
    assert {u: list(h) for u, h in zip(users, got.values["hist_item_ids"]) if h is not None} == current
    for view, transform, key, names in (("item_stats", item_stats.transform, "item_id", ("impressions", "clicks", "ctr")),
                                        ("user_stats", user_stats.transform, "user_id", ("user_impressions", "user_clicks", "user_ctr"))):
        newest = transform(events).toPandas().sort_values("event_timestamp").groupby(key).last()
        keys = sorted(newest.index.tolist())
        got = reader.read(view, keys, now=later)
        assert [[got.values[n][k] for n in names] for k in range(len(keys))] == \
            [[pytest.approx(float(newest.loc[k, n])) for n in names] for k in keys], view


NEW = [  # landed after the batch: colliding timestamps, a new user, a re-sent event, a conflicting label
    [(1, 11, "2020-07-05 00:00:00", 1), (1, 12, "2020-07-05 00:00:00", 1), (4, 10, "2020-07-05 00:00:00", 1)],
    [(2, 14, "2020-07-06 00:00:00", 1), (1, 10, "2020-07-05 00:00:00.000001", 0), (4, 12, "2020-07-05 00:00:01", 0)],
    [(1, 11, "2020-07-05 00:00:00", 1), (3, 14, "2020-07-07 00:00:00", 1), (2, 14, "2020-07-06 00:00:00", 0)],
    [(3, 11, "2020-07-08 00:00:00", 1), (4, 14, "2020-07-08 00:00:00", 1)],
]


def land(root: Path, files: list[list[tuple]]) -> None:
    """One file per list, 20 ms apart: Spark's file source orders files by modification time (ms)."""
    landing = EventLanding(root)
    for rows in files:
        landing.land([Event(u, i, T(t).replace(tzinfo=UTC), l) for u, i, t, l in rows], now=dt.datetime(2021, 1, 1, tzinfo=UTC))
        time.sleep(0.02)


@pytest.mark.integration
@pytest.mark.parametrize("crash", ["after_online", pytest.param("after_commit", marks=pytest.mark.slow),
                                   pytest.param("after_publish", marks=pytest.mark.slow)])
def test_stream_killed_mid_batch_and_restarted_equals_a_batch_recompute(spark, tmp_path, crash):
    root, repo = applied_root(spark, tmp_path, EVENTS, embedding_rows())
    land(root, NEW)
    (root / "_landing" / "events" / "z-bad.json").write_text('{"user_id": 1, "item_id": 999, "event_timestamp": "2020-07-09T00:00:00+00:00", '
                                                             '"label": 1}\nnot json\n')
    killed = stream(root, repo, crash=f"{crash}:stream-g001-0000000001")
    assert killed.returncode == -9, killed.stderr[-3000:]
    done = stream(root, repo)
    assert done.returncode == 0, done.stderr[-3000:]
    report = [json.loads(line) for line in (root / "_stream" / "batches.jsonl").read_text().splitlines()]
    assert sum(b["quarantined"] for b in report) == 3 and not any(b["late"] for b in report), report
    # The killed batch ran again under its own id: what it had committed was finished, the rest a no-op.
    assert [b["batch"] for b in report].count("stream-g001-0000000001") == 1 and "0 late" in done.stdout
    killed_batch = next(b for b in report if b["batch"] == "stream-g001-0000000001")
    assert killed_batch["events"] > 0 and killed_batch["recovered"] == killed_batch["events"]  # finished on restart, not "duplicates"
    unique = {(u, i, t): l for rows in NEW for u, i, t, l in rows if (u, i, t) != (2, 14, "2020-07-06 00:00:00") or l == 1}
    assert_stream_equals_batch(spark, root, repo, EVENTS + [(u, i, t, l) for (u, i, t), l in unique.items()])
    quarantined = duckdb.connect().execute(f"SELECT rule FROM read_parquet('{root}/quarantine/stream/*.parquet')").fetchall()
    assert sorted(r[0] for r in quarantined) == ["item_known", "json_object", "label_conflict"]


@pytest.mark.integration
def test_a_day_of_movielens_replayed_through_the_stream_equals_the_batch(spark, tmp_path):
    """The users active on 2015-11-14 (7 users, 292 events that day; MovieLens rates many films in one
    second): their history before the day goes through the batch jobs, the day lands hour by hour."""
    ratings = pd.read_csv(REPO / "data" / "movielens-small" / "ratings.csv")
    ratings["ts"] = pd.to_datetime(ratings["timestamp"], unit="s")
    day = pd.Timestamp("2015-11-14")
    users = ratings.loc[ratings["ts"].dt.normalize() == day, "userId"].unique()
    mine = ratings[ratings["userId"].isin(users) & (ratings["ts"] < day + pd.Timedelta(days=1))]
    rows = [(int(r.userId), int(r.movieId), r.ts.strftime("%Y-%m-%d %H:%M:%S"), int(r.rating >= 4.0)) for r in mine.itertuples()]
    before = [r for r in rows if T(r[2]) < day.to_pydatetime()]
    during = sorted((r for r in rows if T(r[2]) >= day.to_pydatetime()), key=lambda r: r[2])
    assert len(users) == 7 and len(during) == 292
    items = sorted({r[1] for r in rows})
    # A test fixture, not an encoder: each item's vector is a fixed angle, so similarities are checkable.
    embeddings = [Row(item_id=i, text_emb=[1.0], image_emb=None, mm_emb=angle(i * 37 % 360), has_image=False, encoder_id="e",
                      event_timestamp=T("1990-01-01 00:00:00"), created_timestamp=T("1990-01-01 00:00:00")) for i in items]
    root, repo = applied_root(spark, tmp_path, before, embeddings)
    by_hour: dict[str, list] = {}
    for r in during:
        by_hour.setdefault(r[2][:13], []).append(r)
    land(root, list(by_hour.values()))
    # Spark's source log folded into a .compact file every second batch, never read by the driver here: those
    # batches Spark reads, the others the driver.
    done = stream(root, repo, max_files=2, extra=("--conf", "spark.sql.streaming.fileSource.log.compactInterval=2"),
                  env_extra={"MMFS_STREAM_COMPACT_READ_MAX_BYTES": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = [json.loads(line) for line in (root / "_stream" / "batches.jsonl").read_text().splitlines()]
    assert {b["read_by"] for b in report} == {"spark", "driver"}, [b["read_by"] for b in report]
    assert sum(b["events"] for b in report) == len(during) and not any(b["late"] or b["quarantined"] for b in report)
    assert math.ceil(len(by_hour) / 2) == len(report)
    assert_stream_equals_batch(spark, root, repo, rows)


@pytest.mark.integration
def test_a_reset_checkpoint_and_a_copied_root_never_overwrite_published_output(spark, tmp_path):
    """A fresh checkpoint starts Spark's batch ids at 0 again: its batches are a new generation, so the
    first run's files stay. A copy of the root streams on its own (its checkpoint named the source's
    landing folder) and leaves the source as it was."""
    import shutil

    root, repo = applied_root(spark, tmp_path, EVENTS, embedding_rows())
    land(root, NEW[:2])
    first = stream(root, repo)
    assert first.returncode == 0, first.stderr[-3000:]
    published = {p.relative_to(root): p.read_bytes() for p in root.glob("*/stream-*.parquet")}
    assert published and all(p.name.startswith("stream-g001-") for p in published)
    shutil.rmtree(root / "_stream" / "checkpoint")  # reset: deleted, as a corrupt one would be
    land(root, NEW[2:])
    second = stream(root, repo)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p: (root / p).read_bytes() for p in published} == published  # nothing published was replaced
    assert any(p.name.startswith("stream-g002-") for p in root.glob("events/stream-*.parquet"))
    unique = {(u, i, t): l for rows in NEW for u, i, t, l in rows if (u, i, t) != (2, 14, "2020-07-06 00:00:00") or l == 1}
    everything = EVENTS + [(u, i, t, l) for (u, i, t), l in unique.items()]
    assert_stream_equals_batch(spark, root, repo, everything)

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    source = {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    feast_store.apply("duckdb", repo, copy)  # the user repo's registry now reads the copy's tables
    land(copy, [[(4, 11, "2020-07-09 00:00:00", 1)]])
    third = stream(copy, repo)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "set aside" in third.stderr and (copy / "_stream" / "checkpoint.g002-for-another-root").is_dir()
    new_key = (4, 11, dt.datetime(2020, 7, 9, tzinfo=UTC))
    assert new_key in offline(copy, "events", "user_id, item_id, event_timestamp")
    assert new_key not in offline(root, "events", "user_id, item_id, event_timestamp")
    assert {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == source


@pytest.mark.integration
def test_every_landed_file_is_read_or_set_aside_with_its_reason(spark, tmp_path):
    """Spark's file source skipped, without a word, a file whose modification time was more than 7
    days older than the newest seen, files named _*, and files in a subfolder. Now the first two
    kinds are read, and a hidden name is moved to quarantine/landing with its reason."""
    root, repo = applied_root(spark, tmp_path, EVENTS, embedding_rows())
    land(root, NEW[:1])
    first = stream(root, repo)
    assert first.returncode == 0, first.stderr[-3000:]
    landing = root / "_landing" / "events"
    line = lambda u, i, t: json.dumps({"user_id": u, "item_id": i, "event_timestamp": f"{t}+00:00", "label": 1}) + "\n"  # noqa: E731
    (landing / "sub").mkdir()
    (landing / "sub" / "deeper.json").write_text(line(2, 11, "2020-07-10T00:00:00"))
    old = landing / "old.json"
    old.write_text(line(3, 12, "2020-07-10T00:00:00"))
    os.utime(old, (time.time() - 30 * 86400,) * 2)  # modified a month before the newest file
    (landing / "_hidden.json").write_text(line(4, 12, "2020-07-10T00:00:00"))
    (landing / "two-rules.json").write_text(json.dumps({"user_id": -1, "item_id": 12, "event_timestamp": "2020-07-11T00:00:00+00:00",
                                                        "label": 7}) + "\n")  # one line, two broken rules
    second = stream(root, repo)
    assert second.returncode == 0, second.stderr[-3000:]
    keys = offline(root, "events", "user_id, item_id, epoch_us(event_timestamp)")
    at = int(dt.datetime(2020, 7, 10, tzinfo=UTC).timestamp() * 1e6)
    assert {(2, 11, at), (3, 12, at)} <= keys and (4, 12, at) not in keys
    assert not (landing / "_hidden.json").exists()
    report = [json.loads(x) for x in (root / "_stream" / "batches.jsonl").read_text().splitlines()]
    assert sum(b["quarantined"] for b in report) == 1 and sum(b["broken_rules"] for b in report) == 2  # counted per line
    reasons = [json.loads(x) for x in (root / "quarantine" / "landing" / "reasons.jsonl").read_text().splitlines()]
    assert [r["file"] for r in reasons] == [str(landing / "_hidden.json")] and "skips names starting with" in reasons[0]["reason"]
    assert Path(reasons[0]["moved_to"]).read_text() == line(4, 12, "2020-07-10T00:00:00")


@pytest.mark.integration
def test_the_stream_on_a_standalone_cluster_with_its_root_as_a_file_uri(spark, tmp_path):
    """``--root file:///...`` and ``--master spark://...`` with the driver started in another folder:
    the stream reads, logs, publishes and reports through Hadoop's FileSystem (the batch jobs'
    layer), nothing lands beside the driver, and the result equals the batch recompute."""
    from tests.support.spark_cluster import spark_cluster

    root, repo = applied_root(spark, tmp_path, EVENTS, embedding_rows())
    land(root, NEW)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with spark_cluster(tmp_path / "cluster", cores=1, memory="1g") as cluster:
        done = stream(root.as_uri(), repo, max_files=2, cwd=elsewhere, extra=(
            "--master", cluster.master_url, "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.executor.memory=512m",
            "--conf", f"spark.pyspark.python={sys.executable}"))
        state = cluster.state()
    assert done.returncode == 0, done.stderr[-3000:]
    assert [a["name"] for a in state["completedapps"]] == ["mmfs-stream"]
    assert not list(elsewhere.iterdir())  # every path resolved against the root, not the driver's folder
    report = [json.loads(line) for line in (root / "_stream" / "batches.jsonl").read_text().splitlines()]
    assert [b["batch"] for b in report] == ["stream-g001-0000000000", "stream-g001-0000000001"]
    assert json.loads((root / "_stream" / "checkpoint" / "_mmfs_checkpoint.json").read_text())["root"] == str(root.resolve())
    assert not list(root.glob("*/.stream-*.crc"))  # the raw local file system: no checksum files beside what the stream published
    unique = {(u, i, t): l for rows in NEW for u, i, t, l in rows if (u, i, t) != (2, 14, "2020-07-06 00:00:00") or l == 1}
    assert_stream_equals_batch(spark, root, repo, EVENTS + [(u, i, t, l) for (u, i, t), l in unique.items()])


def test_a_micro_batchs_files_are_read_from_the_checkpoint_or_left_to_spark(tmp_path):
    """The driver reads a micro-batch's files itself when Spark's checkpoint names them plainly (the
    offsets of the batch and the one before, the source log's entries in between); an entry folded
    into a .compact file, or a log in another form, gives None: Spark reads that batch."""
    from mmfs.core.files import LocalFiles
    from mmfs.streaming.job import batch_files

    checkpoint = tmp_path / "checkpoint"
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "sources" / "0").mkdir(parents=True)
    for batch, offset in ((0, 1), (1, 3), (2, 4)):
        (checkpoint / "offsets" / str(batch)).write_text(f'v1\n{{"batchWatermarkMs":0}}\n{{"logOffset":{offset}}}')
    entries = {0: ["a b.json"], 1: ["b.json"], 2: ["c.json", "d.json"], 3: ["e.json"]}
    for entry, names in entries.items():
        (checkpoint / "sources" / "0" / str(entry)).write_text("v1\n" + "".join(
            json.dumps({"path": f"file:///land/{n.replace(' ', '%20')}", "timestamp": 1000 * (entry + 1), "batchId": entry}) + "\n"
            for n in names))
    files = LocalFiles()
    assert batch_files(files, str(checkpoint), 0) == [("file:///land/a b.json", 1.0), ("file:///land/b.json", 2.0)]
    assert batch_files(files, str(checkpoint), 1) == [("file:///land/c.json", 3.0), ("file:///land/d.json", 3.0),
                                                      ("file:///land/e.json", 4.0)]
    assert batch_files(files, str(checkpoint), 2) is None  # entry 4 not written: Spark reads it
    (checkpoint / "sources" / "0" / "4.compact").write_text("v1\n" + "".join(  # every entry so far, 4's last
        json.dumps({"path": f"file:///land/{n}", "timestamp": 5000, "batchId": k}) + "\n" for k, n in ((3, "e.json"), (4, "f.json"))))
    assert batch_files(files, str(checkpoint), 2) == [("file:///land/f.json", 5.0)]
    assert batch_files(files, str(checkpoint), 2, compact_max_bytes=10) is None  # too big to read: Spark reads it
    (checkpoint / "sources" / "0" / "3").write_text("v2\n{}")
    assert batch_files(files, str(checkpoint), 1) is None

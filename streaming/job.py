"""``mmfs stream``: the event log's files applied to the online store and the offline tables by
Spark Structured Streaming.

    mmfs stream --root out/movielens [--landing DIR] [--trigger-s 0.2] [--available-now] [--master URL]

Reads the landing folder (``<root>/_landing/events`` by default; ``POST /events`` appends there,
any producer may) with Spark's file source, one JSON line per event. Each micro-batch:

1. parses and checks every line with ingest's rules (``mmfs.core.events.landing.parse_line``); a line that
   breaks one is quarantined to ``<root>/quarantine/stream/<batch>.parquet`` with the rule and the
   reason, never dropped (a batch is named ``stream-g<checkpoint generation>-<Spark's id>``:
   ``mmfs.streaming.checkpoint``);
2. applies the rest with the batch jobs' rules (``mmfs.streaming.increments.IncrementWriter``): new
   sequence snapshots and stats to the online store through Feast (``increment_log.write_online``),
   and the rows appended to the offline tables as the batch jobs would have written them;
3. reports itself: one JSON line per batch in ``<root>/_stream/batches.jsonl`` (events applied,
   of them ``recovered`` (finished from the log after a failure), duplicates, late, quarantined
   lines and the rules they broke, the files' landing times and when the batch was visible).

Exactly once: Spark's checkpoint (``<root>/_stream/checkpoint``) records which files each batch
read and which batches committed; a batch Spark replays after a crash has the same id and the same
files, and the writer's log and event keys make the replay a no-op for what was already applied
(``mmfs.streaming.increments``). Late events (older than what is online for their user or item) go to
the batch path (``feedback_events``, ``late_events``) and are counted, never dropped silently.

Order: Spark's file source takes files in modification-time order (milliseconds), and a micro-batch
applies its events in time order. An event that comes in after a newer one of its user or item was
applied (it landed later, or in a file older by mtime that another batch took first) is late.

Any file system: ``--root``, ``--landing`` and ``--checkpoint`` take a path or any URI Hadoop
knows (``file://``, ``hdfs://``, ``s3a://``). Everything the job writes goes through Hadoop's
FileSystem API on the driver (``mmfs.pipelines.spark.table_io.HadoopFiles``), the layer the batch
jobs write their tables through. The Feast repo (its registry and online store) stays local: a
root that is not on the local disk needs ``--repo``.

``--available-now`` processes what has landed and stops (Spark's AvailableNow trigger): the demo
and the tests use it. Otherwise the job runs until stopped, one micro-batch every ``--trigger-s``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import sys
import time
from urllib.parse import unquote

import pyarrow as pa

from mmfs.core.contracts import tables as C
from mmfs.core.contracts.names import LANDING_SUBDIR, STREAM_SUBDIR
from mmfs.core.events.landing import parse_line
from mmfs.core.files import Files, join, list_files, write_parquet
from mmfs.pipelines.spark.args import add_common_args, spark_from_args
from mmfs.pipelines.spark.table_io import HadoopFiles, job_main
from mmfs.streaming.checkpoint import batch_name, generation as checkpoint_generation

log = logging.getLogger("mmfs.stream")
UTC = dt.timezone.utc
MAX_FILE_AGE = "36500d"  # Spark's file source: ignore nothing for its age
LANDING_CHECK_S = 60.0  # how often a running stream looks for landed files Spark will not read
DEFAULT_TRIGGER_S = 0.2  # a micro-batch every 0.2 s at most: event -> servable p99 within 1 s (docs/streaming.md)
# A .compact source log entry (every file so far) is read while no bigger than this; past it, Spark reads
# those batches. MMFS_STREAM_COMPACT_READ_MAX_BYTES overrides it (the tests set 0 to run Spark's path).
COMPACT_READ_MAX_BYTES = int(os.environ.get("MMFS_STREAM_COMPACT_READ_MAX_BYTES", 8 << 20))
LINE_BREAK = re.compile(r"\r\n|\r|\n")  # Spark's text source: a line ends at any of them
IN_FLIGHT_S = 600  # a hidden .tmp younger than this is a write in progress (EventLanding renames it when done)


def set_aside_unreadable(files: Files, root: str, landing: str) -> list[str]:
    """Move every landed file Spark's file source would skip without a word (a name, or a folder on its
    path, starting with ``_`` or ``.``; an abandoned ``.tmp``) to ``<root>/quarantine/landing/``, each
    with its reason in ``reasons.jsonl`` there. Returns the files moved (logged as a warning)."""
    moved, now = [], time.time()
    target = join(root, "quarantine", "landing")
    base = landing.rstrip("/") + "/"
    for entry in sorted(list_files(files, landing), key=lambda e: e.path):
        parts = entry.path[len(base):].split("/")
        if not any(part[:1] in ("_", ".") for part in parts):
            continue
        if entry.name.startswith(".") and entry.name.endswith(".tmp") and now - entry.mtime_ms / 1e3 < IN_FLIGHT_S:
            continue  # a write in progress
        reason = ("an unfinished write (a hidden .tmp never renamed)" if entry.name.endswith(".tmp") else
                  "Spark's file source skips names starting with '_' or '.': rename it without the prefix and land it again")
        dest = join(target, f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{'~'.join(parts)}")
        files.mkdirs(target)
        files.rename(entry.path, dest)
        files.append_text(join(target, "reasons.jsonl"), json.dumps({"file": entry.path, "moved_to": dest, "reason": reason, "at": now}) + "\n")
        moved.append(entry.path)
    if moved:
        log.warning("%d landed file(s) Spark would not read, set aside in %s with their reasons: %s", len(moved), target, moved)
    return moved


class MicroBatches:
    """The foreachBatch function: one Spark micro-batch of landed lines -> quarantine, apply, report."""

    def __init__(self, writer, root: str, generation: int, landing: str, checkpoint: str):
        self.writer = writer
        self.checkpoint = checkpoint
        self.spark_reads = 0  # micro-batches whose lines Spark read (the checkpoint did not name their files)
        self.files: Files = writer.files
        self.root = root
        self.landing = landing
        self.checked_landing = time.time()
        self.generation = generation  # the checkpoint's (mmfs.streaming.checkpoint): batch names never repeat across checkpoints
        self.report = join(root, STREAM_SUBDIR, "batches.jsonl")
        self.files.mkdirs(join(root, STREAM_SUBDIR))

    def __call__(self, lines, batch_id: int) -> None:
        began = time.time()
        if began - self.checked_landing > LANDING_CHECK_S:
            set_aside_unreadable(self.files, self.root, self.landing)
            self.checked_landing = began
        spark_reads = self.spark_reads
        rows = self._lines(lines, batch_id)  # a micro-batch is bounded by maxFilesPerTrigger: the driver applies it
        read = time.time()
        name = batch_name(self.generation, batch_id)
        known, now = self.writer.known.ids(), dt.datetime.now(UTC)
        events, bad, files, bad_lines = [], [], {}, 0
        for file, landed, value in rows:
            files.setdefault(file, landed)
            event, problems = parse_line(value, known, now)
            if event is None:
                bad_lines += 1
                bad += [(p["rule"], f"{file}: {p['field']}: {p['error']}", value) for p in problems]
            else:
                events.append(event)
        done = self.writer.record(events, now=now, batch_id=name)
        bad += [("label_conflict", f"event key recorded with label {label}", e.to_json()) for e, label in done["conflicts"]]
        bad_lines += len(done["conflicts"])
        if bad:
            self._quarantine(name, bad)
        visible = time.time()
        entry = {"batch": name, "lines": len(rows), "events": done["events"], "recovered": done["recovered"], "duplicates": done["duplicates"],
                 "late": done["late"], "quarantined": bad_lines, "broken_rules": len(bad), "users": done["users"], "items": done["items"],
                 "snapshots": done["snapshots"], "files": len(files),
                 "landed_min": min((t for t in files.values() if t), default=None), "started": began, "read": read, "visible": visible,
                 "read_by": "spark" if self.spark_reads > spark_reads else "driver"}
        self.files.append_text(self.report, json.dumps(entry) + "\n")
        log.info("%s: %d lines, %d applied, %d duplicates, %d late, %d quarantined in %.2f s", name, len(rows), done["events"],
                 done["duplicates"], done["late"], bad_lines, visible - began)

    def _lines(self, lines, batch_id: int) -> list[tuple[str, float, str]]:
        """(file, landed, line) for every line of the micro-batch. Spark chose the batch's files and
        recorded them in its checkpoint before running it (``batch_files``); the driver reads them
        itself, through the stream's file system, rather than running a Spark job per micro-batch to
        bring the same lines to it (a quarter of a second a batch on 2 cores). Lines split as Spark's
        text source splits them. Where the checkpoint does not name the files plainly, Spark reads them."""
        named = batch_files(self.files, self.checkpoint, batch_id)
        if named is None:
            self.spark_reads += 1
            return [(row.file, row.landed, row.value) for row in lines.collect()]
        out = []
        for path, landed in named:
            try:
                text = self.files.read_bytes(path).decode("utf-8", errors="replace")
            except OSError:  # not where the checkpoint says (moved meanwhile?): Spark reads the batch
                self.spark_reads += 1
                return [(row.file, row.landed, row.value) for row in lines.collect()]
            split = LINE_BREAK.split(text)
            if split and split[-1] == "":
                split.pop()  # the break ending the last line
            out += [(path, landed, line) for line in split]
        return out

    def _quarantine(self, name: str, bad: list[tuple[str, str, str]]) -> None:
        """The lines that broke a rule, in the quarantine table's shape, one file per batch (a replay rewrites it)."""
        folder = join(self.root, "quarantine", "stream")
        self.files.mkdirs(folder)
        at = dt.datetime.now(UTC)
        table = pa.table({"table": ["events"] * len(bad), "rule": [b[0] for b in bad], "reason": [b[1] for b in bad],
                          "row_json": [b[2] for b in bad], "quarantined_at": [at] * len(bad)}, schema=C.QUARANTINE.arrow())
        tmp, path = join(folder, f".{name}.parquet.tmp"), join(folder, f"{name}.parquet")
        write_parquet(self.files, tmp, table, sync=True)
        if self.files.exists(path):  # a replay's: the same lines
            self.files.delete(path)
        self.files.rename(tmp, path)


def batch_files(files: Files, checkpoint: str, batch_id: int, compact_max_bytes: int = COMPACT_READ_MAX_BYTES
                ) -> list[tuple[str, float]] | None:
    """(file, modification time s) of each file Spark's file source gave micro-batch ``batch_id``, from
    the checkpoint: ``offsets/<id>`` holds the source's log offset after the batch (its last line,
    ``{"logOffset": K}``), ``offsets/<id - 1>`` the one before, and ``sources/0/<k>`` the files of
    each log entry k in between ("v1", then one JSON line per file: path, timestamp ms, batchId).
    Every ``compactInterval``-th entry is ``<k>.compact``, every file so far: read while it is at
    most ``compact_max_bytes``. None when any of it is not there in that form (Spark reads the batch)."""
    try:
        def log_offset(batch: int) -> int:
            if batch < 0:
                return -1
            return int(json.loads(files.read_bytes(join(checkpoint, "offsets", str(batch))).decode().splitlines()[-1])["logOffset"])

        out = []
        for entry in range(log_offset(batch_id - 1) + 1, log_offset(batch_id) + 1):
            plain, compact = join(checkpoint, "sources", "0", str(entry)), join(checkpoint, "sources", "0", f"{entry}.compact")
            if files.exists(plain):
                text = files.read_bytes(plain).decode().splitlines()
            elif files.exists(compact) and files.status(compact).size <= compact_max_bytes:
                tag = f"{entry}}}"  # a cheap first cut (batchId is the last field); the JSON decides below
                text = [line for n, line in enumerate(files.read_bytes(compact).decode().splitlines())
                        if n == 0 or line.rstrip().endswith(tag)]
            else:
                return None
            if not text or text[0] != "v1":
                return None
            out += [(unquote(f["path"]), f["timestamp"] / 1e3) for f in map(json.loads, text[1:]) if f.get("batchId") == entry]
        return out
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def start(spark, writer, root: str, landing: str, checkpoint: str, trigger_s: float, available_now: bool,
          max_files_per_trigger: int):
    """Start the streaming query over ``landing``; returns it (``awaitTermination`` to wait). The
    checkpoint's generation names its batches (``mmfs.streaming.checkpoint``)."""
    from pyspark.sql import functions as F

    files = writer.files
    files.mkdirs(landing)
    generation = checkpoint_generation(files, checkpoint, root, landing)
    set_aside_unreadable(files, root, landing)
    # Every file, however old and however deep: Spark's defaults skip a file whose modification time is
    # more than 7 days older than the newest one seen (maxFileAge) and never look into subfolders.
    lines = (spark.readStream.format("text").option("maxFilesPerTrigger", max_files_per_trigger)
             .option("maxFileAge", MAX_FILE_AGE).option("recursiveFileLookup", "true").load(landing)
             .select("value", F.col("_metadata.file_path").alias("file"),
                     (F.unix_micros(F.col("_metadata.file_modification_time")) / 1e6).alias("landed")))
    query = lines.writeStream.foreachBatch(MicroBatches(writer, root, generation, landing, checkpoint)).option("checkpointLocation", checkpoint)
    query = query.trigger(availableNow=True) if available_now else query.trigger(processingTime=f"{max(1, round(trigger_s * 1000))} milliseconds")
    return query.queryName("mmfs-stream").start()


@job_main
def main(argv: list[str] | None = None) -> int:
    """``mmfs stream``."""
    from mmfs.store.feast_store import add_repo_args, open_store
    from mmfs.streaming.increments import IncrementWriter

    parser = argparse.ArgumentParser(prog="mmfs stream", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="table root the batch jobs wrote and mmfs apply registered")
    parser.add_argument("--landing", default="", help="the event log folder (default <root>/_landing/events)")
    parser.add_argument("--checkpoint", default="", help="Spark's checkpoint folder (default <root>/_stream/checkpoint)")
    add_repo_args(parser)
    parser.add_argument("--trigger-s", type=float, default=DEFAULT_TRIGGER_S, help="micro-batch interval in seconds (default %(default)s)")
    parser.add_argument("--max-files-per-trigger", type=int, default=1000)
    parser.add_argument("--available-now", action="store_true", help="process what has landed, then stop")
    parser.add_argument("--timeout-s", type=float, default=0, help="stop after this many seconds (default: run until stopped)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    root = args.root
    spark = spark_from_args(args, "mmfs-stream")
    files = HadoopFiles(spark)
    local_root = files.local_path(root)
    if local_root is None and not args.repo:
        parser.error(f"--root {root} is not on the local disk: pass --repo, the Feast repo whose config reads it")
    store = open_store(args.config, args.repo, local_root)
    writer = IncrementWriter(store, root, files=files)
    query = start(spark, writer, root, args.landing or join(root, LANDING_SUBDIR),
                  args.checkpoint or join(root, STREAM_SUBDIR, "checkpoint"),
                  args.trigger_s, args.available_now, args.max_files_per_trigger)
    try:
        if args.timeout_s:
            query.awaitTermination(args.timeout_s)
        else:
            query.awaitTermination()
    finally:
        if query.isActive:
            query.stop()
    if query.exception() is not None:
        print(f"mmfs stream: error: {query.exception()}", file=sys.stderr)
        return 1
    print(f"mmfs stream: {summary(files, root)}")
    return 0


def summary(files: Files, root: str) -> str:
    """Totals of ``<root>/_stream/batches.jsonl``."""
    path = join(root, STREAM_SUBDIR, "batches.jsonl")
    batches = [json.loads(line) for line in files.read_bytes(path).decode().splitlines()] if files.exists(path) else []
    total = {k: sum(b[k] for b in batches) for k in ("events", "duplicates", "late", "quarantined")}
    return f"{len(batches)} micro-batches, {total['events']} events applied, {total['duplicates']} duplicates, " \
           f"{total['late']} late (to the batch path), {total['quarantined']} quarantined"

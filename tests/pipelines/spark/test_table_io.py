import pytest
from pyspark.sql import functions as F

from mmfs.pipelines.spark.table_io import read_meta, read_table, write_table


def test_write_replaces_and_keeps_metadata(spark, tmp_path):
    path = str(tmp_path / "t")
    write_table(spark.range(3), path, meta={"version": 1})
    write_table(spark.range(5), path, meta={"version": 2})
    assert read_table(spark, path).count() == 5
    assert read_meta(spark, path) == {"version": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["t"]  # no temporary or old copies left


def test_a_job_failing_mid_write_leaves_the_previous_output_untouched(spark, tmp_path):
    path = str(tmp_path / "t")
    write_table(spark.range(3), path, meta={"version": 1})

    @F.udf("long")
    def explode_on_seven(x):
        if x == 7:
            raise RuntimeError("worker died mid-write")
        return x

    with pytest.raises(Exception, match="worker died mid-write"):
        write_table(spark.range(10).select(explode_on_seven("id").alias("id")), path, meta={"version": 2})
    assert sorted(r.id for r in read_table(spark, path).collect()) == [0, 1, 2]
    assert read_meta(spark, path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_a_swap_interrupted_between_renames_is_recovered(spark, tmp_path):
    path = str(tmp_path / "t")
    write_table(spark.range(4), path)
    (tmp_path / "t").rename(tmp_path / "t.old-abc")  # as if killed after the first rename
    assert read_table(spark, path).count() == 4
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_missing_table_names_the_job_to_run(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="run the job that writes it"):
        read_table(spark, str(tmp_path / "nothing"))


def _events_table(spark, path, n):
    df = spark.range(n).select((F.col("id") % 7).alias("user_id"), (F.col("id") % 11 + 1).alias("item_id"),
                               F.timestamp_micros(F.col("id") * 1_000_000).alias("event_timestamp"),
                               (F.col("id") % 2).cast("int").alias("label"))
    write_table(df.repartition(2), str(path))
    return sorted(path.glob("*.parquet"))


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_corrupt_parquet_file_fails_the_job_with_an_error_naming_it(spark, tmp_path, damage):
    from mmfs.pipelines.jobs import user_sequences
    from mmfs.pipelines.spark.table_io import TableReadError

    files = _events_table(spark, tmp_path / "root" / "events", 2000)
    victim = files[0]
    data = bytearray(victim.read_bytes())
    if damage == "truncated":
        victim.write_bytes(bytes(data[: len(data) // 2]))  # footer gone
    else:
        for i in range(4, len(data) // 2):  # pages overwritten, footer intact
            data[i] = 0x5A
        victim.write_bytes(bytes(data))
    with pytest.raises(TableReadError) as caught:
        user_sequences.main(["--root", str(tmp_path / "root")])
    assert str(victim) in str(caught.value)
    assert "corrupt" in str(caught.value) and len(str(caught.value)) < 600  # the file and what to do, not a JVM stack
    assert not (tmp_path / "root" / "sequences").exists()


@pytest.mark.integration
def test_a_job_killed_mid_write_keeps_the_old_output_and_a_rerun_completes(spark, tmp_path):
    """SIGKILL a real job process (driver and JVM) while it writes: every table still reads whole
    as the previous run wrote it, and the next run replaces it and cleans up."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import duckdb

    root = tmp_path / "root"
    job = [sys.executable, "-m", "mmfs.cli", "user-sequences", "--root", str(root), "--master", "local[2]"]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    count = lambda table: duckdb.connect().execute(f"select count(*) from '{root}/{table}/*.parquet'").fetchone()[0]  # noqa: E731

    _events_table(spark, root / "events", 20_000)
    subprocess.run(job, env=env, check=True, capture_output=True, timeout=300)
    before = {t: (count(t), sorted(p.name for p in (root / t).iterdir())) for t in ("sequences", "user_sequence_snapshots")}
    assert before["sequences"][0] == 20_000

    _events_table(spark, root / "events", 100_000)
    proc = subprocess.Popen(job, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not list(root.glob("sequences.tmp-*/_temporary")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the job ended before it started writing: nothing was killed mid-write"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    assert list(root.glob("sequences.tmp-*")), "the kill landed after the write: the test proves nothing"
    for table, (rows, files) in before.items():
        assert count(table) == rows and sorted(p.name for p in (root / table).iterdir()) == files

    subprocess.run(job, env=env, check=True, capture_output=True, timeout=300)
    assert count("sequences") == 100_000
    assert not list(root.glob("*.tmp-*")) and not list(root.glob("*.old-*"))

"""Reading and atomically replacing parquet tables, and the metadata file kept beside them.

A job never writes into a live table. It writes to a temporary sibling, then swaps it in with
two renames through the Hadoop FileSystem API (local disk, HDFS and the like), so a failed or
interrupted job leaves the previous good output untouched. A swap interrupted between its two
renames is repaired by the next write or read of that table.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

from pyspark.sql import DataFrame, SparkSession

META_FILE = "_mmfs_meta.json"  # leading underscore: Spark and pyarrow skip it as data


class TableWriteError(RuntimeError):
    pass


def _fs_and_path(spark: SparkSession, path: str):
    jvm = spark._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(spark._jsc.hadoopConfiguration())
    return fs, hadoop_path


def _sibling(spark: SparkSession, path: str, tag: str):
    return spark._jvm.org.apache.hadoop.fs.Path(f"{path.rstrip('/')}.{tag}")


def recover(spark: SparkSession, path: str) -> None:
    """Undo a swap that stopped between its two renames (the live table is then missing)."""
    fs, live = _fs_and_path(spark, path)
    if fs.exists(live):
        return
    parent = live.getParent()
    if parent is None or not fs.exists(parent):
        return
    prefix = live.getName() + ".old-"
    olds = [s.getPath() for s in fs.listStatus(parent) if s.getPath().getName().startswith(prefix)]
    if olds:
        newest = max(olds, key=lambda p: fs.getFileStatus(p).getModificationTime())
        fs.rename(newest, live)


def write_table(
    df: DataFrame,
    path: str,
    meta: dict[str, Any] | None = None,
    partition_by: list[str] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> str:
    """Write ``df`` as parquet to ``path``, replacing what is there only once fully written."""
    spark = df.sparkSession
    recover(spark, path)
    fs, live = _fs_and_path(spark, path)
    run_id = uuid.uuid4().hex[:12]
    tmp = _sibling(spark, path, f"tmp-{run_id}")
    old = _sibling(spark, path, f"old-{run_id}")
    try:
        writer = df.write.mode("error")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(tmp.toString())
        if meta is not None:
            _write_bytes(fs, spark._jvm.org.apache.hadoop.fs.Path(tmp, META_FILE),
                         json.dumps(meta, indent=2, sort_keys=True, default=str).encode("utf-8"))
        for name, data in (extra_files or {}).items():
            if not name.startswith("_"):
                raise ValueError(f"side file {name!r} must start with '_' so readers skip it as data")
            _write_bytes(fs, spark._jvm.org.apache.hadoop.fs.Path(tmp, name), data)
        if fs.exists(live) and not fs.rename(live, old):
            raise TableWriteError(f"could not move the previous {path} aside")
        if not fs.rename(tmp, live):
            fs.rename(old, live)
            raise TableWriteError(f"could not move the new output into {path}")
        fs.delete(old, True)
    finally:
        if fs.exists(tmp):
            fs.delete(tmp, True)
    return path


def read_table(spark: SparkSession, path: str) -> DataFrame:
    recover(spark, path)
    fs, live = _fs_and_path(spark, path)
    if not fs.exists(live):
        raise FileNotFoundError(f"table {path} does not exist: run the job that writes it first")
    return spark.read.parquet(path)


def read_meta(spark: SparkSession, path: str) -> dict[str, Any]:
    fs, live = _fs_and_path(spark, path)
    meta_path = spark._jvm.org.apache.hadoop.fs.Path(live, META_FILE)
    if not fs.exists(meta_path):
        raise FileNotFoundError(f"{path} has no {META_FILE}: it was not written by an mmfs job")
    stream = fs.open(meta_path)
    try:
        reader = spark._jvm.java.io.BufferedReader(spark._jvm.java.io.InputStreamReader(stream, "UTF-8"))
        lines = []
        line = reader.readLine()
        while line is not None:
            lines.append(line)
            line = reader.readLine()
    finally:
        stream.close()
    return json.loads("\n".join(lines))


def _write_bytes(fs, hadoop_path, data: bytes) -> None:
    stream = fs.create(hadoop_path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()

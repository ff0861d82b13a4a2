"""Reading and atomically replacing parquet tables, and the metadata file kept beside them.

A job never writes into a live table. It writes to a temporary sibling, then swaps it in with
two renames through the Hadoop FileSystem API (local disk, HDFS and the like), so a failed or
interrupted job leaves the previous good output untouched. A swap interrupted between its two
renames is repaired by the next write or read of that table.

``HadoopFiles`` is the same layer for the driver's own files (``mmfs.core.files.Files``): what
``mmfs stream`` publishes, logs and reports goes through it, so its root may be any URI Hadoop knows.
"""
from __future__ import annotations

import functools
import json
import re
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit
from typing import Any, Callable

from pyspark.sql import DataFrame, SparkSession

from mmfs.core.files import Entry, LocalFiles, join as files_join, local_path

from mmfs.core.contracts.names import META_FILE  # _mmfs_meta.json: a leading underscore, so Spark and pyarrow skip it as data


class TableWriteError(RuntimeError):
    """A table's new output could not be swapped in."""

    pass


class TableReadError(RuntimeError):
    """A table file Spark cannot read (truncated, corrupt, not parquet, gone), named in the message."""

    def __init__(self, file: str, reason: str):
        self.file = file
        table = file.rsplit("/", 1)[0] if "/" in file else file
        super().__init__(f"cannot read {file}: {reason}. Restore it, or re-run the job that writes {table} "
                         "(a table's last good output is replaced only once a new one is complete)")


_UNREADABLE = re.compile(r"\[(FAILED_READ_FILE[.A-Z_]*)\][^\n]*?(?:reading file|file) (\S+?\.parquet)\.?\s", re.S)
_CORRUPT = "the file is corrupt or not parquet"
_REASONS = {
    "FAILED_READ_FILE.CANNOT_READ_FILE_FOOTER": "its parquet footer cannot be read: " + _CORRUPT + " (truncated?)",
    "FAILED_READ_FILE.NO_HINT": "its data cannot be decoded: " + _CORRUPT,
    "FAILED_READ_FILE.FILE_NOT_EXIST": "the file disappeared while the job read it (was the table replaced meanwhile?)",
}


def unreadable_file(exc: BaseException) -> TableReadError | None:
    """The TableReadError for a Spark error that names an unreadable file, else None."""
    found = _UNREADABLE.search(str(exc))
    if not found:
        return None
    error_class, file = found.groups()
    return TableReadError(re.sub(r"^file:(//)?", "", file), _REASONS.get(error_class, f"{error_class}: {_CORRUPT}"))


@contextmanager
def clear_read_errors():
    """Turn Spark's long error for an unreadable parquet file into a TableReadError naming the file."""
    try:
        yield
    except TableReadError:
        raise
    except Exception as exc:  # Py4JJavaError or a pyspark captured exception, whichever Spark raised
        clear = unreadable_file(exc)
        if clear is None:
            raise
        raise clear from None


def job_main(main: Callable[..., int]) -> Callable[..., int]:
    """Decorator for a job's ``main``: a file it cannot read fails the job with a TableReadError,
    and the data it cached is dropped when it ends. Spark matches cached data by query plan, so a
    later job in the same session (``mmfs pipeline``, tests) reading a table rewritten since would
    otherwise be served the old rows."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            with clear_read_errors():
                return main(*args, **kwargs)
        finally:
            active = SparkSession.getActiveSession()
            if active is not None:
                active.catalog.clearCache()
    return wrapped


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


def _remove_stale_temporaries(fs, live) -> None:
    """Delete what a killed earlier run left half-written beside the table (``<table>.tmp-<run>``).

    One writer per table at a time is the contract (a scheduler's retry starts after the failed
    attempt ended), so any temporary sibling found here belongs to a run that died.
    """
    parent = live.getParent()
    if parent is None or not fs.exists(parent):
        return
    prefix = live.getName() + ".tmp-"
    for status in fs.listStatus(parent):
        if status.getPath().getName().startswith(prefix):
            fs.delete(status.getPath(), True)


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
    _remove_stale_temporaries(fs, live)
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
    """The parquet table at ``path``, after repairing an interrupted swap; FileNotFoundError if it does not exist."""
    recover(spark, path)
    fs, live = _fs_and_path(spark, path)
    if not fs.exists(live):
        raise FileNotFoundError(f"table {path} does not exist: run the job that writes it first")
    with clear_read_errors():
        return spark.read.parquet(path)


def table_exists(spark: SparkSession, path: str) -> bool:
    """Whether the table at ``path`` exists, after repairing an interrupted swap."""
    recover(spark, path)
    fs, live = _fs_and_path(spark, path)
    return bool(fs.exists(live))


def read_side_file(spark: SparkSession, path: str, name: str) -> bytes:
    """A side file kept beside a table's data (its metadata, a fitted PCA, ...)."""
    fs, live = _fs_and_path(spark, path)
    side = spark._jvm.org.apache.hadoop.fs.Path(live, name)
    if not fs.exists(side):
        raise FileNotFoundError(f"{path} has no {name}: it was not written by an mmfs job")
    stream = fs.open(side)
    try:
        return bytes(spark._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def read_meta(spark: SparkSession, path: str) -> dict[str, Any]:
    """The table's ``_mmfs_meta.json``, parsed."""
    return json.loads(read_side_file(spark, path, META_FILE).decode("utf-8"))


def _write_bytes(fs, hadoop_path, data: bytes) -> None:
    stream = fs.create(hadoop_path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


class HadoopFiles:
    """``mmfs.core.files.Files`` through Hadoop's FileSystem API on the Spark driver: a local path,
    ``file://``, ``hdfs://``, ``s3a://`` alike. Local disk is used raw (no ``.crc`` side files,
    which readers of the tables would have to skip)."""

    def __init__(self, spark: SparkSession, local_reads_by_os: bool = True):
        """``local_reads_by_os``: list and read the local disk with the OS (the same files; Hadoop's raw
        local file system is java.io.File underneath, and bytes read over py4j cost seconds for a
        large table). Writes, renames and deletes always go through Hadoop."""
        self.local_reads_by_os = local_reads_by_os
        self._jvm = spark._jvm
        self._gateway = spark.sparkContext._gateway
        self._conf = spark._jsc.hadoopConfiguration()
        self._raw_local = None
        self._to_string = None  # java.util.Arrays.toString(Object[]), called by reflection (see list)
        self._path_class = self._jvm.org.apache.hadoop.fs.Path  # each attribute of a py4j package path is a round trip
        self._file_systems: dict[tuple[str, str], Any] = {}  # (scheme, authority) -> FileSystem: Hadoop caches them too

    join = staticmethod(files_join)

    def _fs(self, path: str):
        hadoop_path = self._path_class(str(path))
        parts = urlsplit(str(path))
        key = (parts.scheme, parts.netloc)
        fs = self._file_systems.get(key)
        if fs is None:
            fs = hadoop_path.getFileSystem(self._conf)
            if fs.getScheme() == "file":  # LocalFileSystem (or a subclass) checksums into .crc files and cannot append
                if self._raw_local is None:
                    self._raw_local = self._jvm.org.apache.hadoop.fs.RawLocalFileSystem()
                    self._raw_local.initialize(self._jvm.java.net.URI("file:///"), self._conf)
                fs = self._raw_local
            self._file_systems[key] = fs
        return fs, hadoop_path

    def local_path(self, path: str) -> str | None:
        fs, _ = self._fs(path)
        return local_path(path) if fs is self._raw_local else None

    def exists(self, path: str) -> bool:
        fs, p = self._fs(path)
        return bool(fs.exists(p))

    def is_dir(self, path: str) -> bool:
        fs, p = self._fs(path)
        try:
            return bool(fs.getFileStatus(p).isDirectory())
        except Exception as exc:  # noqa: BLE001 - py4j's error, or pyspark's capture of it
            if _java_class(exc) == "java.io.FileNotFoundException":
                return False
            raise

    def list(self, path: str) -> list[Entry]:
        fs, p = self._fs(path)
        if fs is self._raw_local and self.local_reads_by_os:
            # Hadoop's raw local file system is java.io.File; its statuses fork a shell per file for the
            # owner and permissions their text carries. The OS lists the same folder in microseconds.
            return LocalFiles().list(path)
        try:
            statuses = fs.listStatus(p)
        except Exception as exc:  # noqa: BLE001 - py4j's error, or pyspark's capture of it
            if _java_class(exc) == "java.io.FileNotFoundException":
                return []
            raise
        out = self._parse(path, statuses)
        if out is None:  # a listing the bulk form cannot be read from: one field at a time
            out = [Entry(files_join(path, s.getPath().getName()), s.getPath().getName(), bool(s.isDirectory()),
                         int(s.getModificationTime()), int(s.getLen())) for s in statuses]
        return sorted(out, key=lambda e: e.name)

    def _parse(self, path: str, statuses) -> list[Entry] | None:
        """The listing in a few py4j calls, whatever its length: every FileStatus's ``toString`` at once
        (each field read over py4j costs a round trip, and the stream lists its tables every batch;
        HDFS and S3A statuses carry their fields). None when the text does not parse back to as many
        entries (a name holding '; ', say)."""
        n = len(statuses)
        if n == 0:
            return []
        if self._to_string is None:
            arrays = self._jvm.java.lang.Class.forName("java.util.Arrays")
            parameters = self._gateway.new_array(self._jvm.java.lang.Class, 1)
            parameters[0] = self._gateway.new_array(self._jvm.java.lang.Object, 0).getClass()
            self._to_string = arrays.getMethod("toString", parameters)
        args = self._gateway.new_array(self._jvm.java.lang.Object, 1)
        args[0] = statuses
        text = str(self._to_string.invoke(None, args))
        found = _STATUS.findall(text)
        if len(found) != n:
            return None
        out = []
        for full, is_dir, length, mtime in found:
            name = full.rstrip("/").rsplit("/", 1)[-1]
            out.append(Entry(files_join(path, name), name, is_dir == "true", int(mtime), int(length or 0)))
        return out

    def status(self, path: str) -> Entry:
        fs, p = self._fs(path)
        if fs is self._raw_local and self.local_reads_by_os:
            return LocalFiles().status(path)
        with _not_found_as_python(path):
            s = fs.getFileStatus(p)
        return Entry(str(path), path.rstrip("/").rsplit("/", 1)[-1], bool(s.isDirectory()), int(s.getModificationTime()),
                     0 if s.isDirectory() else int(s.getLen()))

    def mkdirs(self, path: str) -> None:
        fs, p = self._fs(path)
        if not fs.mkdirs(p):
            raise OSError(f"could not create {path}")

    def read_bytes(self, path: str) -> bytes:
        fs, p = self._fs(path)
        if fs is self._raw_local and self.local_reads_by_os:
            return LocalFiles().read_bytes(path)
        with _not_found_as_python(path):
            stream = fs.open(p)
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def write_bytes(self, path: str, data: bytes, sync: bool = False) -> None:
        fs, p = self._fs(path)
        stream = fs.create(p, True)
        try:
            stream.write(bytearray(data))
            if sync:
                stream.hsync()
        finally:
            stream.close()

    def append_text(self, path: str, text: str) -> None:
        fs, p = self._fs(path)
        if not fs.exists(p):
            self.write_bytes(path, text.encode("utf-8"))
            return
        try:
            stream = fs.append(p)
        except Exception as exc:  # noqa: BLE001 - py4j's error, or pyspark's capture of it
            if _java_class(exc) != "java.lang.UnsupportedOperationException":
                raise
            # An object store cannot append: write the file again with the text added.
            tmp = files_join(path.rsplit("/", 1)[0], f".{path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:8]}.tmp")
            self.write_bytes(tmp, self.read_bytes(path) + text.encode("utf-8"))
            fs.delete(p, False)
            self.rename(tmp, path)
            return
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def rename(self, src: str, dst: str) -> None:
        fs, s = self._fs(src)
        _, d = self._fs(dst)
        if fs.exists(d):
            raise FileExistsError(f"cannot rename {src} to {dst}: {dst} exists")
        if not fs.rename(s, d):
            raise OSError(f"could not rename {src} to {dst}")

    def delete(self, path: str) -> None:
        fs, p = self._fs(path)
        fs.delete(p, True)


# Hadoop's FileStatus.toString: "<Class>{path=<uri>; isDirectory=<bool>[; length=<n>; ...]; modification_time=<ms>; ...}"
_STATUS = re.compile(r"\{path=([^;]*); isDirectory=(true|false)(?:; length=(\d+); replication=\d+; blocksize=\d+)?; "
                     r"modification_time=(\d+);")


@contextmanager
def _not_found_as_python(path: str):
    """Hadoop's FileNotFoundException (through py4j or pyspark's capture of it) as Python's, naming ``path``."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - py4j's error, or pyspark's capture of it
        if _java_class(exc) == "java.io.FileNotFoundException":
            raise FileNotFoundError(path) from None
        raise


def _java_class(exc: BaseException) -> str:
    """The Java exception class behind a py4j error, or pyspark's captured one ("" for neither)."""
    origin = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    return str(origin.getClass().getName()) if origin is not None else ""

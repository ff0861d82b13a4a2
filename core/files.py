"""The file operations the stream's state needs, on any file system: ``Files``.

``mmfs stream`` keeps its checkpoint marker, increment log, published table files, report and
quarantine under the table root. On a laptop that root is a folder; on a cluster it is an
``hdfs://`` or ``s3a://`` URI. The stream therefore does every file operation through a ``Files``:

- ``LocalFiles`` (here): the local disk, with ``os`` calls (a plain path or a ``file://`` URI);
- ``mmfs.pipelines.spark.table_io.HadoopFiles``: Hadoop's FileSystem API on the Spark driver, the
  layer the batch jobs write their tables through, for any scheme Hadoop knows.

Paths are strings (a path or a URI), joined with ``/`` (``join``). Parquet goes through bytes
(``read_parquet``, ``write_parquet``), so both sides read and write the same files.

What each operation promises, on both:
- ``write_bytes(path, data, sync=True)`` creates or replaces a file; ``sync`` makes it durable
  before returning (fsync / hsync) where the file system can;
- ``rename(src, dst)`` fails (``FileExistsError``) rather than replace an existing ``dst``; on
  local disk and HDFS it is atomic, on object stores it is a copy (the increment log's commit
  marker covers that: ``mmfs.streaming.increment_log``);
- ``append_text`` appends where the file system can, else rewrites the file with the text added;
- ``list`` of a missing folder is empty.
"""
from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Entry:
    """One name in a folder: its full path, whether it is a folder, modification time (ms) and size (0 for a folder)."""

    path: str
    name: str
    is_dir: bool
    mtime_ms: int
    size: int


class Files(Protocol):
    def join(self, base: str, *parts: str) -> str: ...
    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def list(self, path: str) -> list[Entry]: ...
    def status(self, path: str) -> Entry: ...
    def mkdirs(self, path: str) -> None: ...
    def read_bytes(self, path: str) -> bytes: ...
    def write_bytes(self, path: str, data: bytes, sync: bool = False) -> None: ...
    def append_text(self, path: str, text: str) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def delete(self, path: str) -> None: ...
    def local_path(self, path: str) -> str | None: ...


def join(base: str, *parts: str) -> str:
    """``base/part/...``: a path or a URI, one slash between parts."""
    out = str(base).rstrip("/") or "/"
    for part in parts:
        out = f"{out.rstrip('/')}/{str(part).strip('/')}"
    return out


def local_path(path: str) -> str | None:
    """The local path of a plain path or a ``file:`` URI; None for any other scheme."""
    path = str(path)
    if path.startswith("file://"):
        return path[len("file://"):] or "/"
    if path.startswith("file:"):
        return path[len("file:"):]
    return None if "://" in path else path


def parent(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[0]


def basename(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


class LocalFiles:
    """``Files`` on the local disk (see the module docstring)."""

    join = staticmethod(join)

    @staticmethod
    def _p(path: str) -> str:
        local = local_path(path)
        if local is None:
            raise ValueError(f"{path} is not a local path: a remote root needs the stream's Hadoop file system")
        return local

    def local_path(self, path: str) -> str | None:
        return local_path(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(self._p(path))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self._p(path))

    def list(self, path: str) -> list[Entry]:
        out = []
        try:
            scan = list(os.scandir(self._p(path)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        for d in scan:
            try:
                st = d.stat()
            except OSError:
                continue  # gone meanwhile
            is_dir = d.is_dir()
            out.append(Entry(join(path, d.name), d.name, is_dir, st.st_mtime_ns // 1_000_000, 0 if is_dir else st.st_size))
        return sorted(out, key=lambda e: e.name)

    def status(self, path: str) -> Entry:
        """The entry of one path (FileNotFoundError if there is none)."""
        st = os.stat(self._p(path))
        is_dir = os.path.isdir(self._p(path))
        return Entry(str(path), basename(path), is_dir, st.st_mtime_ns // 1_000_000, 0 if is_dir else st.st_size)

    def mkdirs(self, path: str) -> None:
        os.makedirs(self._p(path), exist_ok=True)

    def read_bytes(self, path: str) -> bytes:
        with open(self._p(path), "rb") as f:
            return f.read()

    def write_bytes(self, path: str, data: bytes, sync: bool = False) -> None:
        with open(self._p(path), "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        if sync:
            _fsync_dir(os.path.dirname(self._p(path)) or ".")

    def append_text(self, path: str, text: str) -> None:
        with open(self._p(path), "a") as f:
            f.write(text)

    def rename(self, src: str, dst: str) -> None:
        if os.path.exists(self._p(dst)):
            raise FileExistsError(f"cannot rename {src} to {dst}: {dst} exists")
        os.rename(self._p(src), self._p(dst))
        _fsync_dir(os.path.dirname(self._p(dst)) or ".")

    def delete(self, path: str) -> None:
        p = self._p(path)
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.exists(p):
            os.remove(p)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_files(files: Files, path: str) -> list[Entry]:
    """Every file under ``path``, however deep (a missing folder: none)."""
    out = []
    for entry in files.list(path):
        out += list_files(files, entry.path) if entry.is_dir else [entry]
    return out


def read_parquet(files: Files, paths: list[str], columns: list[str] | None = None) -> pa.Table | None:
    """The rows of ``paths`` (parquet files), ``columns`` only; None for no paths. Files written by
    Spark and by the stream may differ in a column's physical type (timestamp units): each column
    takes the first file's type."""
    tables = [pq.read_table(pa.BufferReader(files.read_bytes(p)), columns=columns) for p in paths]
    if not tables:
        return None
    schema = tables[0].schema
    return pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])


def write_parquet(files: Files, path: str, table: pa.Table, sync: bool = False) -> None:
    """``table`` as one parquet file at ``path``."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    files.write_bytes(path, buffer.getvalue(), sync=sync)

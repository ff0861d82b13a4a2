"""``mmfs.core.files``: the same promises on the local disk and through Hadoop's FileSystem (the
stream's), for a plain path and a ``file://`` URI."""
import pyarrow as pa
import pytest

from mmfs.core.files import LocalFiles, join, list_files, local_path, read_parquet, write_parquet


@pytest.fixture(params=["local", "hadoop", "hadoop-uri", "hadoop-only"])
def fs(request, tmp_path):
    """(files, base): a Files and a folder to work in, as that Files' user would name it. ``hadoop-only``
    lists and reads the local disk through Hadoop too, as it does every other file system."""
    if request.param == "local":
        return LocalFiles(), str(tmp_path)
    from mmfs.pipelines.spark.table_io import HadoopFiles

    files = HadoopFiles(request.getfixturevalue("spark"), local_reads_by_os=request.param != "hadoop-only")
    return files, tmp_path.as_uri() if request.param == "hadoop-uri" else str(tmp_path)


def test_files_keep_their_promises(fs, tmp_path):
    files, base = fs
    folder = join(base, "a", "b")
    assert files.list(folder) == [] and not files.exists(folder) and not files.is_dir(folder)
    files.mkdirs(folder)
    assert files.is_dir(folder) and files.local_path(folder) == str(tmp_path / "a" / "b")
    files.write_bytes(join(folder, "x.bin"), b"one", sync=True)
    files.append_text(join(folder, "x.bin"), "-two")
    files.append_text(join(folder, "new.jsonl"), "line\n")
    assert files.read_bytes(join(folder, "x.bin")) == b"one-two"
    assert (tmp_path / "a" / "b" / "new.jsonl").read_text() == "line\n"
    [entry, _] = [e for e in files.list(folder) if e.name == "x.bin"] + [None]
    assert (entry.path, entry.is_dir, entry.size) == (join(folder, "x.bin"), False, 7) and entry.mtime_ms > 0
    assert files.status(join(folder, "x.bin")) == entry and files.status(folder).is_dir
    assert not list((tmp_path / "a" / "b").glob(".*.crc"))  # no checksum side files among the data
    files.write_bytes(join(folder, "y.bin"), b"y")
    with pytest.raises(FileExistsError):
        files.rename(join(folder, "x.bin"), join(folder, "y.bin"))  # never replaces
    assert files.read_bytes(join(folder, "y.bin")) == b"y"
    files.rename(join(folder, "x.bin"), join(base, "a", "moved.bin"))
    assert sorted(e.name for e in list_files(files, join(base, "a"))) == ["moved.bin", "new.jsonl", "y.bin"]
    with pytest.raises(FileNotFoundError):
        files.read_bytes(join(folder, "x.bin"))
    table = pa.table({"k": [1, 2], "t": pa.array([1, 2], pa.timestamp("us", "UTC"))})
    write_parquet(files, join(folder, "p.parquet"), table, sync=True)
    assert read_parquet(files, [join(folder, "p.parquet")] * 2).num_rows == 4
    files.delete(join(base, "a"))
    assert not (tmp_path / "a").exists()


def test_local_paths_and_uris():
    assert local_path("/x/y") == "/x/y" and local_path("file:///x/y") == "/x/y" and local_path("file:/x") == "/x"
    assert local_path("rel/x") == "rel/x" and local_path("hdfs://nn:8020/x") is None and local_path("s3a://b/x") is None
    assert join("s3a://bucket/", "a/", "/b") == "s3a://bucket/a/b" and join("/r", "x") == "/r/x"
    with pytest.raises(ValueError, match="not a local path"):
        LocalFiles().exists("hdfs://nn/x")


def test_hadoops_listing_in_bulk_reads_back_every_entry(spark, tmp_path):
    """HDFS and S3A listings are read from their statuses' text in one call (the local disk is listed by
    the OS); the parse gives back what the OS lists, or None rather than a wrong listing."""
    from mmfs.pipelines.spark.table_io import HadoopFiles

    files = HadoopFiles(spark)
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.parquet").write_bytes(b"12345")
    (tmp_path / ".hidden.tmp").write_bytes(b"")
    fs, path = files._fs(str(tmp_path))
    parsed = files._parse(str(tmp_path), fs.listStatus(path))
    local = LocalFiles().list(str(tmp_path))
    assert sorted((e.name, e.is_dir, e.size) for e in parsed) == [(e.name, e.is_dir, e.size) for e in local]
    assert all(abs(a.mtime_ms - b.mtime_ms) <= 1 for a, b in zip(sorted(parsed, key=lambda e: e.name), local))
    (tmp_path / "odd; isDirectory=true.json").write_bytes(b"x")
    odd = files._parse(str(tmp_path), fs.listStatus(path))  # a name that reads like a status's fields
    assert odd is None or sorted((e.name, e.is_dir, e.size) for e in odd) == \
        [(e.name, e.is_dir, e.size) for e in LocalFiles().list(str(tmp_path))]

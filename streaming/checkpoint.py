"""The stream's checkpoint and the names of its batches, so that no reset, copy or move of a table
root can overwrite what the stream published.

Spark names micro-batches 0, 1, 2, ... per checkpoint. A fresh checkpoint (a new ``--checkpoint``,
a deleted or corrupt one) starts at 0 again, so output named by Spark's id alone would replace the
earlier batch 0's files. Each checkpoint therefore gets a generation, one above every generation
published under the root (``published_generations``), recorded in the checkpoint itself
(``_mmfs_checkpoint.json``), and a batch is named ``stream-g<generation>-<Spark id>``: the same
on a replay within one checkpoint, never the same across two.

Spark's checkpoint holds absolute paths: on a copied or moved root it names the old landing folder
and fails. The marker records the root and the landing folder it was made for; when they differ,
the old checkpoint is set aside (renamed, never deleted) and a new generation starts. Reading the
landed files again then costs nothing: the writer knows every event key it recorded
(``mmfs.streaming.increments``), so each one is a duplicate, counted and not applied.

Every file operation goes through a ``mmfs.core.files.Files`` (the stream's: Hadoop's FileSystem),
so the checkpoint, like the root, may live on any file system.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from mmfs.core.contracts.names import INCREMENT_LOG_SUBDIR, STREAM_SUBDIR
from mmfs.core.files import Files, basename, join

MARKER = "_mmfs_checkpoint.json"
NAME = re.compile(r"^stream-g(\d+)-\d+")
log = logging.getLogger("mmfs.stream")


def batch_name(generation: int, batch_id: int) -> str:
    """The name of Spark's micro-batch ``batch_id`` of a checkpoint of ``generation`` (generation 0:
    a checkpoint from before generations, whose batches were named by Spark's id alone)."""
    return f"stream-{batch_id:010d}" if generation == 0 else f"stream-g{generation:03d}-{batch_id:010d}"


def published_generations(files: Files, root: str) -> set[int]:
    """Every generation whose batches left a name under ``root``: a table's files, the stream's
    quarantine, its increment log and its report."""
    names = [e.name for table in files.list(root) if table.is_dir for e in files.list(table.path) if e.name.startswith("stream-g")]
    names += [e.name for e in files.list(join(root, "quarantine", "stream"))]
    names += [e.name for e in files.list(join(root, INCREMENT_LOG_SUBDIR))]
    report = join(root, STREAM_SUBDIR, "batches.jsonl")
    if files.exists(report):
        names += [json.loads(line).get("batch", "") for line in files.read_bytes(report).decode().splitlines() if line.strip()]
    return {int(m.group(1)) for name in names if (m := NAME.match(name))}


def identity(files: Files, path: str) -> str:
    """What a checkpoint records for a folder: a local one resolved (so a path and its ``file://``
    URI are the same folder), any other URI as given."""
    local = files.local_path(path)
    return str(Path(local).resolve()) if local is not None else str(path).rstrip("/")


def generation(files: Files, checkpoint: str, root: str, landing: str) -> int:
    """The generation of ``checkpoint`` for this root and landing folder: its own when it was made
    for them; else (none yet, or made for another root) a new one, above all published."""
    here = {"root": identity(files, root), "landing": identity(files, landing)}
    marker = join(checkpoint, MARKER)
    if files.exists(marker):
        info = json.loads(files.read_bytes(marker))
        if {key: info.get(key) for key in here} == here:
            return int(info["generation"])
        aside = f"{checkpoint.rstrip('/')}.g{int(info['generation']):03d}-for-another-root"
        n = 1
        while files.exists(aside):
            aside, n = f"{aside}-{n}", n + 1
        files.rename(checkpoint, aside)
        log.warning("the checkpoint was made for %s (landing %s): set aside as %s; a new one starts, and the landed files "
                    "already applied count as duplicates", info.get("root"), info.get("landing"), basename(aside))
    elif files.list(checkpoint):
        # A checkpoint from before generations: its batches were named by Spark's id alone.
        _write(files, marker, {**here, "generation": 0})
        return 0
    new = max(published_generations(files, root) | {0}) + 1
    files.mkdirs(checkpoint)
    _write(files, marker, {**here, "generation": new})
    return new


def _write(files: Files, path: str, info: dict) -> None:
    tmp = join(path.rsplit("/", 1)[0], f".{basename(path)}.{os.getpid()}.tmp")
    files.write_bytes(tmp, (json.dumps(info) + "\n").encode(), sync=True)
    if files.exists(path):
        files.delete(path)
    files.rename(tmp, path)

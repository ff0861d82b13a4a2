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
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from mmfs.core.contracts.names import INCREMENT_LOG_SUBDIR, STREAM_SUBDIR

MARKER = "_mmfs_checkpoint.json"
NAME = re.compile(r"^stream-g(\d+)-\d+")
log = logging.getLogger("mmfs.stream")


def batch_name(generation: int, batch_id: int) -> str:
    """The name of Spark's micro-batch ``batch_id`` of a checkpoint of ``generation`` (generation 0:
    a checkpoint from before generations, whose batches were named by Spark's id alone)."""
    return f"stream-{batch_id:010d}" if generation == 0 else f"stream-g{generation:03d}-{batch_id:010d}"


def published_generations(root: Path) -> set[int]:
    """Every generation whose batches left a name under ``root``: a table's files, the stream's
    quarantine, its increment log and its report."""
    names = [p.name for p in root.glob("*/stream-g*")]
    names += [p.name for p in (root / "quarantine" / "stream").glob("stream-g*")]
    names += [p.name for p in (root / INCREMENT_LOG_SUBDIR).glob("stream-g*")]
    report = root / STREAM_SUBDIR / "batches.jsonl"
    if report.is_file():
        names += [json.loads(line).get("batch", "") for line in report.read_text().splitlines() if line.strip()]
    return {int(m.group(1)) for name in names if (m := NAME.match(name))}


def generation(checkpoint: Path, root: Path, landing: Path) -> int:
    """The generation of ``checkpoint`` for this root and landing folder: its own when it was made
    for them; else (none yet, or made for another root) a new one, above all published."""
    here = {"root": str(root.resolve()), "landing": str(landing.resolve())}
    marker = checkpoint / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        if {key: info.get(key) for key in here} == here:
            return int(info["generation"])
        aside = checkpoint.with_name(f"{checkpoint.name}.g{int(info['generation']):03d}-for-another-root")
        n = 1
        while aside.exists():
            aside, n = aside.with_name(f"{aside.name}-{n}"), n + 1
        checkpoint.rename(aside)
        log.warning("the checkpoint was made for %s (landing %s): set aside as %s; a new one starts, and the landed files "
                    "already applied count as duplicates", info.get("root"), info.get("landing"), aside)
    elif checkpoint.is_dir() and any(checkpoint.iterdir()):
        # A checkpoint from before generations: its batches were named by Spark's id alone.
        _write(marker, {**here, "generation": 0})
        return 0
    new = max(published_generations(root) | {0}) + 1
    checkpoint.mkdir(parents=True, exist_ok=True)
    _write(marker, {**here, "generation": new})
    return new


def _write(path: Path, info: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, path)

"""``encoders.yaml``: the embedding tables' encoders, the one input the static Feast repo reads
besides the table root.

``mmfs apply`` writes it from each embedding table's ``_mmfs_meta.json`` (the encoder identity the
encode job recorded): one entry per table, ``item_embeddings`` as ``v1`` and a backfill's
``item_embeddings_<version>`` beside it. ``feature_repo/features.py`` declares one embedding view
(and its similarity view and DMF service) per entry, with the entry's vector lengths as the
fields' ``dim`` tags, which the drift check holds the tables to.

Where it lives: beside ``features.py`` in a user's own repo (``mmfs init``; a reviewed file,
committed with it), and ``<table root>/encoders.yaml`` for the packaged repo, which serves many
table roots and keeps no state inside the package.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from mmfs.core.contracts.names import ENCODERS_FILE, ITEM_EMBEDDINGS_VIEW, META_FILE

# Vector lengths declared when an embedding table records none (the default encoders' sizes).
DEFAULT_DIMS = {"mm_dim": 64, "text_dim": 384, "image_dim": 1280}
HEADER = ("# Written by `mmfs apply` from the embedding tables' _mmfs_meta.json. feature_repo/features.py\n"
          "# declares one embedding view per entry: review a change here as a change to the feature views.\n")


def encoders_path(repo: Path | str, table_root: Path | str | None, packaged: bool) -> Path | None:
    """Where ``repo``'s encoders.yaml lives (see the module docstring); ``packaged``: ``repo`` is mmfs's own."""
    if not packaged:
        return Path(repo) / ENCODERS_FILE
    return Path(table_root) / ENCODERS_FILE if table_root is not None else None


def entry(table: Path) -> dict | None:
    """One embedding table's entry, from its meta file: None for a backfill table without one."""
    version = "v1" if table.name == ITEM_EMBEDDINGS_VIEW else table.name.removeprefix(f"{ITEM_EMBEDDINGS_VIEW}_")
    meta = table / META_FILE
    identity = (json.loads(meta.read_text()).get("encoder_identity") or {}) if meta.is_file() else {}
    if version != "v1" and not identity.get("encoder_id"):
        return None  # a backfill's views are declared once its table records its encoder
    return {
        "version": version,
        "table": table.name,
        "encoder_id": str(identity.get("encoder_id") or ""),
        "mm_dim": int(identity.get("mm_dim") or DEFAULT_DIMS["mm_dim"]),
        "text_dim": int((identity.get("text") or {}).get("dim") or DEFAULT_DIMS["text_dim"]),
        "image_dim": int((identity.get("image") or {}).get("dim") or DEFAULT_DIMS["image_dim"]),
    }


def entries(table_root: Path | str) -> list[dict]:
    """Every embedding table's entry under ``table_root``: v1 first (declared even before its
    table exists, with the default lengths), then each backfill in name order."""
    root = Path(table_root)
    tables = [root / ITEM_EMBEDDINGS_VIEW] + sorted(p for p in root.glob(f"{ITEM_EMBEDDINGS_VIEW}_*") if p.is_dir())
    return [e for e in (entry(t) for t in tables) if e is not None]


def write(path: Path, table_root: Path | str) -> list[dict]:
    """Write ``path`` from the tables under ``table_root``; unchanged content is not rewritten."""
    found = entries(table_root)
    text = HEADER + yaml.safe_dump({"encoders": found}, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return found

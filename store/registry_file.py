"""A copied or moved table root takes its Feast registry with it, and that registry still names the
old root's SQLite online store in its infra. Feast's apply reads a changed path as "tear the old
table down, create the new one": run on the copy, it drops the source root's online tables
(``Updated sqlite table ... path: A/... -> B/...``), and on a moved root it fails on the old,
missing folder. ``follow_root`` points the registry's SQLite tables at this root's file before
Feast sees it, so an apply on a copy never touches the source.

Only a local file registry holding ``SqliteTable`` infra is rewritten (what the packaged configs
write); anything else is left to Feast.
"""
from __future__ import annotations

import os
from pathlib import Path


def registry_path(config, repo: Path | str) -> str:
    """The registry of ``config`` as Feast resolves it: a relative path is the repo's; a URI or an
    empty path is returned as it is."""
    path = str(getattr(config.registry, "path", config.registry) or "")
    return path if not path or "://" in path or Path(path).is_absolute() else str(Path(repo) / path)


def follow_root(registry_path: str | Path, online_path: str | Path) -> list[str]:
    """Point every SQLite table the registry at ``registry_path`` records at ``online_path``;
    returns the paths it named before (empty when nothing had moved). The file is replaced
    atomically; a missing registry is left alone."""
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

    registry_path, online_path = Path(registry_path), str(Path(online_path).resolve())
    if not registry_path.is_file():
        return []
    proto = RegistryProto()
    proto.ParseFromString(registry_path.read_bytes())
    moved = []
    for item in proto.infra.infra_objects:
        if item.HasField("sqlite_table") and item.sqlite_table.path != online_path:
            moved.append(item.sqlite_table.path)
            item.sqlite_table.path = online_path
    if moved:
        tmp = registry_path.with_name(f".{registry_path.name}.relocating")
        tmp.write_bytes(proto.SerializeToString())
        os.replace(tmp, registry_path)
    return sorted(set(moved))

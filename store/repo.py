"""The Feast repo mmfs works over, and where its registry and online store live.

mmfs ships its Feast declarations inside the package (``mmfs/feature_repo``: ``features.py``,
``.feastignore`` and the three store configs). ``mmfs init DIR`` writes a copy that the user keeps
under version control, as ``feast init`` does. Every command finds its repo the same way
(``find_repo``): ``--repo`` when given, else the repo ``mmfs apply`` recorded with the table root,
else the packaged one.

State: the packaged repo keeps none (it may lie in a read-only site-packages, and it serves many
table roots): its registry and SQLite online store live with the tables, in ``<root>/_feast``. A
user's own repo keeps them in its ``data/`` folder, as Feast's templates do. ``$MMFS_STATE_DIR``
overrides both.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import yaml

from mmfs.core.contracts.names import FEAST_STATE_SUBDIR, REPO_RECORD_FILE

# In a wheel: site-packages/mmfs/feature_repo; in a source checkout: the repository's feature_repo/.
PACKAGED_REPO = Path(__file__).resolve().parents[1] / "feature_repo"
PACKAGED = "packaged"  # --repo packaged: the packaged repo, whatever the root recorded
CONFIGS = {"duckdb": "feature_store.yaml", "spark": "feature_store.spark.yaml", "redis": "feature_store.redis.yaml"}
REPO_FILES = ("features.py", ".feastignore", *CONFIGS.values())
STATE_DIR_ENV = "MMFS_STATE_DIR"  # the user's choice of where the registry and the SQLite online store live
STATE_SUBDIR = FEAST_STATE_SUBDIR  # by default: <table root>/_feast, with the tables


class RepoNotFound(FileNotFoundError):
    """No Feast repo where one was named (``--repo``, or the one recorded with a table root)."""


class NoStateDir(ValueError):
    """The packaged repo keeps no state, and no table root or state dir was given."""


def is_packaged(repo: Path | str) -> bool:
    return Path(repo).resolve() == PACKAGED_REPO.resolve()


def _checked(repo: Path, named_by: str) -> Path:
    if not (repo / "features.py").is_file():
        raise RepoNotFound(f"{named_by} {repo} is not a Feast repo of mmfs (no features.py there); "
                           f"write one with `mmfs init {repo}`, or leave --repo out to use the packaged repo")
    return repo


def find_repo(repo: Path | str | None = None, table_root: Path | str | None = None) -> Path:
    """The repo a command works over: ``repo`` (``--repo``; ``"packaged"`` for the packaged one),
    else the one recorded with ``table_root`` by ``mmfs apply`` (``record_repo``), else the packaged one."""
    if repo is not None and str(repo) != "":
        return PACKAGED_REPO if str(repo) == PACKAGED else _checked(Path(repo).resolve(), "--repo")
    recorded = recorded_repo(table_root) if table_root is not None else None
    if recorded is not None:
        return _checked(recorded, f"the repo recorded for {table_root} ({Path(table_root) / REPO_RECORD_FILE}):")
    return PACKAGED_REPO


def recorded_repo(table_root: Path | str) -> Path | None:
    """The user repo ``mmfs apply`` recorded with this table root; None for the packaged one or none."""
    record = Path(table_root) / REPO_RECORD_FILE
    if not record.is_file():
        return None
    try:
        path = json.loads(record.read_text())["repo"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RepoNotFound(f"unreadable repo record {record} ({exc}): pass --repo, or delete it to use the packaged repo") from exc
    return None if path == PACKAGED else Path(path)


def record_repo(repo: Path | str, table_root: Path | str) -> None:
    """Remember, with the table root, which repo was applied for it, so later commands on this root
    (``--root`` alone) find it."""
    record = Path(table_root) / REPO_RECORD_FILE
    text = json.dumps({"repo": PACKAGED if is_packaged(repo) else str(Path(repo).resolve())}) + "\n"
    if not record.is_file() or record.read_text() != text:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{record.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, record)


def init_repo(dest: Path | str, force: bool = False) -> Path:
    """``mmfs init DIR``: write the packaged declarations and configs into ``dest`` (created if
    missing). Refuses to overwrite a repo's files there unless ``force``. Returns ``dest``."""
    dest = Path(dest)
    existing = [name for name in REPO_FILES if (dest / name).exists()]
    if existing and not force:
        raise FileExistsError(f"{dest} already holds {', '.join(existing)}: pass --force to overwrite them")
    dest.mkdir(parents=True, exist_ok=True)
    for name in REPO_FILES:
        shutil.copyfile(PACKAGED_REPO / name, dest / name)
    return dest


def yaml_path(config: str = "duckdb", repo: Path | str = PACKAGED_REPO) -> Path:
    """The Feast config file for ``config`` (a name in ``CONFIGS`` or a yaml file name) in ``repo``."""
    name = CONFIGS.get(config, config)
    path = Path(repo) / name
    if not path.is_file():
        raise FileNotFoundError(f"no Feast config {path}; expected one of {sorted(CONFIGS)} or a yaml file name")
    return path


def offline_store_type(fs_yaml: Path) -> str:
    """The ``offline_store.type`` of a Feast config file (default duckdb)."""
    return (yaml.safe_load(fs_yaml.read_text()).get("offline_store") or {}).get("type", "duckdb")


def state_dir(repo: Path | str, table_root: str | Path | None) -> Path:
    """Where the registry and the SQLite online store of ``repo`` over ``table_root`` live:
    ``$MMFS_STATE_DIR`` when set; else, for the packaged repo, ``<table_root>/_feast`` (one store per
    table root); else, for a user's own repo, its ``data/`` folder."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV]).resolve()
    if not is_packaged(repo):
        return Path(repo).resolve() / "data"
    if table_root is None:
        raise NoStateDir(f"the packaged repo {PACKAGED_REPO} keeps no registry or online store: give the table root "
                         f"(--root; its store is <root>/{STATE_SUBDIR}) or set {STATE_DIR_ENV}")
    return Path(table_root).resolve() / STATE_SUBDIR


def repo_env(table_root: str | Path | None, fs_yaml: Path) -> dict[str, str]:
    """The environment of a Feast command over ``fs_yaml``'s repo: the table root features.py
    declares (``MMFS_TABLE_ROOT``) and where the yaml files keep their registry and online store
    (``MMFS_FEAST_STATE``, see ``state_dir``)."""
    state = state_dir(fs_yaml.parent, table_root)
    state.mkdir(parents=True, exist_ok=True)
    env = {"MMFS_FEAST_STATE": str(state)}
    if table_root is not None:
        env["MMFS_TABLE_ROOT"] = str(Path(table_root).resolve())
    return env


def main_init(argv: list[str] | None = None) -> int:
    """``mmfs init DIR``: write mmfs's Feast repo into DIR, for the user to keep and edit."""
    parser = argparse.ArgumentParser(prog="mmfs init", description=main_init.__doc__)
    parser.add_argument("dir", help="folder to write the repo into (created if missing)")
    parser.add_argument("--force", action="store_true", help="overwrite the repo files already there")
    args = parser.parse_args(argv)
    dest = init_repo(args.dir, args.force).resolve()
    print(f"Wrote mmfs's Feast repo to {dest}: {', '.join(REPO_FILES)}\n"
          f"Apply it over a table root with `mmfs apply --root ROOT --repo {dest}` (later commands on ROOT find it);\n"
          f"or with the plain Feast CLI from {dest}:\n"
          f"  export MMFS_TABLE_ROOT=ROOT MMFS_FEAST_STATE={dest / 'data'}\n"
          f"  feast plan && feast apply")
    return 0

"""The Feast side of mmfs: open the repo with one of its configs, check and apply, materialise.

    mmfs apply --root out/movielens [--config duckdb|spark|redis]
    mmfs materialize --root out/movielens [--config redis] [--end 2018-10-01T00:00:00Z]

``mmfs materialize`` wraps the plain Feast CLI (``feast -f feature_store.<config>.yaml
materialize-incremental``) run from ``feature_repo/``. ``mmfs apply`` runs what ``feast apply`` runs,
in-process over features.py parsed once, after checking every table against its feature view, so
schema drift fails here, with the table and column named, rather than as a wrong value at training
or serving time.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mmfs.store import encoders_file
from mmfs.store.registry_file import follow_root, registry_path
from mmfs.store.repo import find_repo, is_packaged, record_repo, repo_env, yaml_path
from mmfs.store.schema import SchemaDriftError, assert_no_drift, check_views, source_glob  # noqa: F401 - the store's checks


class StoreRootMismatch(ValueError):
    """The registry was applied for other tables than the ones a command was given."""


class RegistryUnreadable(StoreRootMismatch):
    """The registry cannot be read, so which tables it was applied for cannot be checked."""


def open_store(config: str = "duckdb", repo: Path | str | None = None, table_root: str | Path | None = None):
    """A FeatureStore over ``repo`` with the given config (registry as applied). With
    ``table_root``, the registry's sources must be that root's tables (``assert_store_root``)."""
    from feast import FeatureStore

    repo = find_repo(repo, table_root)
    fs_yaml = yaml_path(config, repo)
    os.environ.update(repo_env(table_root, fs_yaml))
    store = FeatureStore(repo_path=str(repo), fs_yaml_file=fs_yaml)
    if table_root is not None:
        assert_store_root(store, table_root)
    return store


def assert_store_root(store, table_root: str | Path) -> None:
    """Refuse a registry whose views read tables outside ``table_root``: a training set or a scorer
    would otherwise mix one root's events with another root's features, silently."""
    registry = registry_path(store.config, store.repo_path)
    if registry and not Path(registry).exists():
        return  # nothing applied yet
    root = Path(table_root).resolve()
    try:
        views = store.list_feature_views()
    except Exception as exc:  # noqa: BLE001 - Feast raises many kinds for a registry it cannot parse
        raise RegistryUnreadable(f"cannot read the registry {registry} to check that it was applied for --root {root} "
                                 f"({type(exc).__name__}: {exc}); run `mmfs apply --root {table_root}` to write it again") from exc
    for fv in views:
        glob = source_glob(fv.batch_source)
        if "://" in glob:  # a remote root (s3://, hdfs://): compare the URIs
            if glob.startswith(str(table_root).rstrip("/") + "/"):
                continue
            table = glob.rsplit("/", 1)[0]
        else:
            table = Path(glob).parent
            if root in table.resolve().parents:
                continue
        if True:
            raise StoreRootMismatch(
                f"the registry {registry} was applied for other tables: view {fv.name} reads {table}, not a table under --root {root}. "
                f"Run `mmfs apply --root {table_root}` with a --repo of its own, or pass the root it was applied for")


def feast_cli(args: list[str], config: str = "duckdb", repo: Path | str | None = None, table_root: str | Path | None = None,
              timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the plain Feast CLI from ``repo`` with ``-f <config yaml>``; raise with its stderr on failure."""
    repo = find_repo(repo, table_root)
    fs_yaml = yaml_path(config, repo)
    feast = Path(sys.executable).parent / "feast"
    cmd = [str(feast if feast.exists() else "feast"), "-f", str(fs_yaml), *args]
    done = subprocess.run(cmd, cwd=repo, env={**os.environ, **repo_env(table_root, fs_yaml)},
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return done


def forget_repo_modules(repo: Path) -> list[str]:
    """Drop from ``sys.modules`` every module a parse of ``repo`` will import (named as Feast names
    them, relative to the repo: ``features``, ``my_services``, ``sub.views``) and every module loaded
    from a file inside it. A second parse in the same process (an apply of another repo, or of
    this one again) must import each file afresh: a module kept from before holds the previous
    parse's objects, and Feast then finds every view declared twice. Returns the names dropped."""
    repo = repo.resolve()
    names = {".".join(p.relative_to(repo).with_suffix("").parts) for p in repo.rglob("*.py")}
    dropped = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name in names or (file and repo in Path(file).resolve().parents):
            sys.modules.pop(name, None)
            dropped.append(name)
    return dropped


def declared_repo(repo: Path | str, table_root: str | Path | None, fs_yaml: Path):
    """What features.py declares under this config (Feast's ``RepoContents``: parsed, not yet
    applied), as the feast CLI would parse it with ``-f fs_yaml``."""
    import click
    from feast.repo_operations import parse_repo

    os.environ.update(repo_env(table_root, fs_yaml))
    forget_repo_modules(Path(repo))
    repo = str(Path(repo).resolve())
    sys.path.insert(0, repo)
    try:  # parse_repo names modules relative to the working directory; -f reaches features.py in the click context
        with contextlib.chdir(repo), click.Context(click.Command("feast"), obj={"FS_YAML_FILE": fs_yaml}):
            return parse_repo(Path(repo))
    finally:
        sys.path.remove(repo)


def declared_views(repo: Path | str, table_root: str | Path | None, fs_yaml: Path):
    """The feature views features.py declares under this config (see ``declared_repo``)."""
    return declared_repo(repo, table_root, fs_yaml).feature_views


def feast_apply(contents, fs_yaml: Path, table_root: str | Path | None) -> str:
    """``feast -f fs_yaml apply`` on already parsed repo ``contents``, in this process: the steps of
    Feast's ``apply_total`` (its CLI's apply), less the second interpreter that imports Feast and
    parses features.py again (most of the time ``mmfs apply`` took). Returns what Feast printed."""
    from feast import FeatureStore
    from feast.project import Project
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total_with_repo_instance

    repo = fs_yaml.parent.resolve()
    os.environ.update(repo_env(table_root, fs_yaml))
    config = load_repo_config(repo, fs_yaml)
    if not contents.projects:  # as the CLI: the project named in the yaml
        contents.projects.append(Project(name=config.project, description=config.project_description or ""))
    printed = io.StringIO()
    relocated = _follow_root(config, repo)
    if relocated:
        print(f"The registry named the online store {', '.join(relocated)} (a copied or moved root): it now names this "
              f"root's own, and the other was left untouched", file=printed)
    with contextlib.chdir(repo), contextlib.redirect_stdout(printed):
        for project in contents.projects:
            config.project = project.name
            store = FeatureStore(config=config)
            print(f"Applying changes for project {project.name}")
            # Source validation off: the drift check above read every table already, and Feast's own check
            # takes the sources' globs for paths and only warns that they do not exist.
            apply_total_with_repo_instance(store, project.name, store.registry, contents, skip_source_validation=True)
    return printed.getvalue()


def _follow_root(config, repo: Path) -> list[str]:
    """``registry_file.follow_root`` for a file registry over a SQLite online store (paths as Feast resolves them)."""
    registry = registry_path(config, repo)
    if config.online_store.type != "sqlite" or getattr(config.registry, "registry_type", "file") != "file" or "://" in registry:
        return []
    online = Path(config.online_store.path)
    return follow_root(registry, online if online.is_absolute() else repo / online)


def apply(config: str = "duckdb", repo: Path | str | None = None, table_root: str | Path | None = None) -> str:
    """Write encoders.yaml from the tables, check every table against the views, then apply them
    as ``feast apply`` does (features.py parsed once for both). The repo is recorded with the table
    root, so later commands on the root find it (``mmfs.store.repo.find_repo``)."""
    repo = find_repo(repo, table_root)
    fs_yaml = yaml_path(config, repo)
    if table_root is not None:
        encoders_file.write(encoders_file.encoders_path(repo, table_root, is_packaged(repo)), table_root)
    contents = declared_repo(repo, table_root, fs_yaml)
    assert_no_drift(contents.feature_views)
    printed = feast_apply(contents, fs_yaml, table_root)
    if table_root is not None:
        record_repo(repo, table_root)
    return printed


def materialize(config: str = "duckdb", repo: Path | str | None = None, table_root: str | Path | None = None,
                end: dt.datetime | None = None, start: dt.datetime | None = None,
                views: list[str] | None = None, engine: str = "feast") -> dict:
    """Materialise the online views up to ``end`` (default now).

    ``engine="feast"`` runs the feast CLI, whose materialisation holds every entity's latest row
    in one process; ``engine="spark"`` writes the same rows partition by partition from Spark tasks
    (``mmfs.store.materialize_spark``), with the same start/end rules below.

    With ``start``: ``feast materialize START END``. Without: ``feast materialize-incremental END``
    for views materialised before. A view never materialised would start at wall-clock
    now - ttl (a year ago for ttl 0) under plain ``materialize-incremental``, silently skipping
    older rows; here its first run starts at the earliest row of its table instead.
    """
    end = end or dt.datetime.now(dt.timezone.utc)
    store = open_store(config, repo, table_root)
    online = [fv for fv in store.list_feature_views() if fv.online and (not views or fv.name in views)]
    began = time.perf_counter()
    if engine == "spark":
        from mmfs.store import materialize_spark

        def start_of(fv) -> dt.datetime:
            if start is not None:
                return start
            return fv.most_recent_end_time if fv.materialization_intervals else _earliest(fv)

        runs = materialize_spark.materialize(store, online, start_of, end)
        return {"config": config, "engine": "spark", "end": _iso(end), "runs": runs, "seconds": time.perf_counter() - began}
    if engine != "feast":
        raise ValueError(f"engine must be 'feast' or 'spark', not {engine!r}")
    runs = []
    if start is not None:
        runs.append(["materialize", _iso(start), _iso(end), *[a for fv in online for a in ("--views", fv.name)]])
    else:
        fresh = [fv for fv in online if not fv.materialization_intervals]
        done = [fv for fv in online if fv.materialization_intervals]
        if fresh:
            earliest = min(_earliest(fv) for fv in fresh)
            runs.append(["materialize", _iso(earliest), _iso(end), *[a for fv in fresh for a in ("--views", fv.name)]])
        if done:
            runs.append(["materialize-incremental", _iso(end), *[a for fv in done for a in ("--views", fv.name)]])
    for args in runs:
        feast_cli(args, config, repo, table_root)
    return {"config": config, "end": _iso(end), "runs": [" ".join(r) for r in runs], "seconds": time.perf_counter() - began}


def _earliest(fv) -> dt.datetime:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    value = con.execute(f"SELECT min({fv.batch_source.timestamp_field}) FROM read_parquet('{source_glob(fv.batch_source)}')").fetchone()[0]
    if value is None:
        return dt.datetime(1970, 1, 2, tzinfo=dt.timezone.utc)
    value = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return value - dt.timedelta(seconds=1)


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value} is naive; pass an aware UTC time")
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


def parse_time(text: str) -> dt.datetime:
    """An ISO time with a zone (``Z`` allowed) -> aware datetime; argparse type, refuses naive times."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; write e.g. {text}Z or {text}+00:00")
    return value


def _parser(prog: str, doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--root", required=True, help="table root the Spark jobs wrote")
    add_repo_args(parser)
    return parser


def add_repo_args(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--repo``, as every command that opens the store takes them."""
    parser.add_argument("--config", default="duckdb", help="the repo's store config: duckdb (SQLite online store), spark, "
                        "redis, or a yaml file name in the repo")
    parser.add_argument("--repo", default=None, help="Feast repo directory (`mmfs init` writes one); default: the repo "
                        "`mmfs apply` recorded for --root, else mmfs's packaged repo; `packaged` for that one")


def main_apply(argv: list[str] | None = None) -> int:
    """``mmfs apply``: check the tables, then ``feast apply``; returns 2 on schema drift, else 0."""
    args = _parser("mmfs apply", "Check the tables against the feature views, then `feast apply`.").parse_args(argv)
    try:
        output = apply(args.config, args.repo, args.root)
        # Feast's notice that the project comes from feature_store.yaml is how this repo works.
        print("\n".join(line for line in output.splitlines() if not line.startswith("No project found in the repository")))
    except SchemaDriftError as error:
        print(f"mmfs apply: {error}", file=sys.stderr)
        return 2
    return 0


def main_materialize(argv: list[str] | None = None) -> int:
    """``mmfs materialize``: materialise into the config's online store and print what was written as JSON. Returns 0."""
    parser = _parser("mmfs materialize", "`feast materialize-incremental` into the config's online store.")
    parser.add_argument("--end", type=parse_time, default=None, help="materialise up to this UTC time (default now)")
    parser.add_argument("--start", type=parse_time, default=None, help="with --end: `feast materialize START END`")
    parser.add_argument("--views", action="append", default=None)
    parser.add_argument("--engine", choices=["feast", "spark"], default="feast",
                        help="feast: the feast CLI (whole view in one process); spark: written partition by partition")
    args = parser.parse_args(argv)
    print(json.dumps(materialize(args.config, args.repo, args.root, args.end, args.start, args.views, args.engine), indent=2, default=str))
    return 0


def main_ui(argv: list[str] | None = None) -> int:
    """``mmfs ui``: Feast's web UI over the store of ``--root`` (views, services, saved datasets),
    on 127.0.0.1, with its REST registry API under /api/v1."""
    parser = _parser("mmfs ui", main_ui.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args(argv)
    from feast import ui_server

    store = open_store(args.config, args.repo, args.root)
    print(f"Feast UI for {store.project} ({args.root}) on http://{args.host}:{args.port}", flush=True)
    ui_server.start_server(store, host=args.host, port=args.port, project_id=store.project)
    return 0

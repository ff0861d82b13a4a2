"""The Feast side of mmfs: open the repo with one of its configs, check and apply, materialise.

    mmfs apply --root out/movielens [--config duckdb|spark|redis]
    mmfs materialize --root out/movielens [--config redis] [--end 2018-10-01T00:00:00Z]

Both wrap the plain Feast CLI (``feast -f feature_store.<config>.yaml apply`` /
``materialize-incremental``) run from ``feature_repo/``; ``mmfs apply`` first checks every table
against its feature view so schema drift fails here, with the table and column named, rather
than as a wrong value at training or serving time.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[2] / "feature_repo"
CONFIGS = {"duckdb": "feature_store.yaml", "spark": "feature_store.spark.yaml", "redis": "feature_store.redis.yaml"}
EMBEDDING_VIEW = "item_embeddings"  # a backfill's views are named item_embeddings_<version>


def embedding_view(view_names) -> str | None:
    """The item embedding view among a service's views: item_embeddings, or a backfill's item_embeddings_v2."""
    return next((name for name in view_names if name.startswith(EMBEDDING_VIEW)), None)


class SchemaDriftError(ValueError):
    """A table no longer matches the feature view that declares it."""


def yaml_path(config: str = "duckdb", repo: Path | str = REPO) -> Path:
    name = CONFIGS.get(config, config)
    path = Path(repo) / name
    if not path.is_file():
        raise FileNotFoundError(f"no Feast config {path}; expected one of {sorted(CONFIGS)} or a yaml file name")
    return path


def offline_store_type(fs_yaml: Path) -> str:
    return (yaml.safe_load(fs_yaml.read_text()).get("offline_store") or {}).get("type", "duckdb")


STATE_DIR_ENV = "MMFS_STATE_DIR"  # the user's choice of where the registry and the SQLite online store live
STATE_SUBDIR = "_feast"  # by default: <table root>/_feast, with the tables


class NoStateDir(ValueError):
    """The checkout's feature_repo keeps no state, and no table root or state dir was given."""


def state_dir(repo: Path | str, table_root: str | Path | None) -> Path:
    """Where the registry and the SQLite online store of ``repo`` over ``table_root`` live:
    ``$MMFS_STATE_DIR`` when set; else, for the checkout's own feature_repo, ``<table_root>/_feast``
    (one store per table root, never inside the source checkout); else, for a repo copied
    elsewhere (the user's own), its ``data/`` folder, as Feast's templates keep it."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV]).resolve()
    if Path(repo).resolve() != REPO.resolve():
        return Path(repo).resolve() / "data"
    if table_root is None:
        raise NoStateDir(f"the checkout's {REPO} keeps no registry or online store: give the table root (--root; "
                         f"its store is <root>/{STATE_SUBDIR}) or set {STATE_DIR_ENV}")
    return Path(table_root).resolve() / STATE_SUBDIR


def repo_env(table_root: str | Path | None, fs_yaml: Path) -> dict[str, str]:
    """Environment under which features.py declares the tables at ``table_root`` and the yaml
    files find their registry and online store (``MMFS_FEAST_STATE``, see ``state_dir``)."""
    env = {"MMFS_OFFLINE_STORE": offline_store_type(fs_yaml)}
    state = state_dir(fs_yaml.parent, table_root)
    state.mkdir(parents=True, exist_ok=True)
    env["MMFS_FEAST_STATE"] = str(state)
    if table_root is not None:
        env["MMFS_TABLE_ROOT"] = str(Path(table_root).resolve())
        env.update(encoder_env(Path(table_root) / "item_embeddings" / "_mmfs_meta.json"))
        env.update(encoder_env(Path(table_root) / "item_embeddings_v2" / "_mmfs_meta.json", suffix="_V2"))
    return env


def encoder_env(meta_file: Path, suffix: str = "") -> dict[str, str]:
    """Vector dims and encoder id of an embedding table, for features.py's declarations (tags).

    ``suffix="_V2"`` describes a backfilled table; without one, its views are not declared."""
    if not meta_file.is_file():
        return {f"MMFS_ENCODER_ID{suffix}": ""} if suffix else {}
    identity = json.loads(meta_file.read_text()).get("encoder_identity") or {}
    env = {f"MMFS_ENCODER_ID{suffix}": str(identity.get("encoder_id") or "")}
    if identity.get("mm_dim"):
        env[f"MMFS_MM_DIM{suffix}"] = str(identity["mm_dim"])
    if (identity.get("text") or {}).get("dim"):
        env[f"MMFS_TEXT_DIM{suffix}"] = str(identity["text"]["dim"])
    if (identity.get("image") or {}).get("dim"):
        env[f"MMFS_IMAGE_DIM{suffix}"] = str(identity["image"]["dim"])
    return env


class StoreRootMismatch(ValueError):
    """The registry was applied for other tables than the ones a command was given."""


def open_store(config: str = "duckdb", repo: Path | str = REPO, table_root: str | Path | None = None):
    """A FeatureStore over ``repo`` with the given config (registry as applied). With
    ``table_root``, the registry's sources must be that root's tables (``assert_store_root``)."""
    from feast import FeatureStore

    fs_yaml = yaml_path(config, repo)
    os.environ.update(repo_env(table_root, fs_yaml))
    store = FeatureStore(repo_path=str(repo), fs_yaml_file=fs_yaml)
    if table_root is not None:
        assert_store_root(store, table_root)
    return store


def assert_store_root(store, table_root: str | Path) -> None:
    """Refuse a registry whose views read tables outside ``table_root``: a training set or a scorer
    would otherwise mix one root's events with another root's features, silently."""
    registry = getattr(store.config.registry, "path", "")
    if registry and not Path(registry).is_absolute():
        registry = str(Path(store.repo_path) / registry)
    if registry and not Path(registry).exists():
        return  # nothing applied yet
    root = Path(table_root).resolve()
    try:
        views = store.list_feature_views()
    except Exception:  # noqa: BLE001 - an unreadable registry fails later with Feast's own message
        return
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


def feast_cli(args: list[str], config: str = "duckdb", repo: Path | str = REPO, table_root: str | Path | None = None,
              timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the plain Feast CLI from ``repo`` with ``-f <config yaml>``; raise with its stderr on failure."""
    fs_yaml = yaml_path(config, repo)
    feast = Path(sys.executable).parent / "feast"
    cmd = [str(feast if feast.exists() else "feast"), "-f", str(fs_yaml), *args]
    done = subprocess.run(cmd, cwd=repo, env={**os.environ, **repo_env(table_root, fs_yaml)},
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return done


# -- schema drift --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldCheck:
    view: str
    table: str
    column: str
    problem: str


def _expected_arrow(dtype) -> tuple[pa.DataType, ...]:
    from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

    scalar = {Int64: (pa.int64(),), Int32: (pa.int32(),), Float32: (pa.float32(),), Float64: (pa.float64(),),
              Bool: (pa.bool_(),), String: (pa.string(), pa.large_string())}
    if isinstance(dtype, Array):
        inner = dtype.base_type
        if inner == UnixTimestamp:
            return tuple(pa.list_(pa.timestamp(u, tz)) for u in ("us", "ns") for tz in ("UTC", None))
        return tuple(pa.list_(pa.field("element", t, nullable)) for t in scalar[inner] for nullable in (True, False))
    return scalar.get(dtype, ())


def _types_match(actual: pa.DataType, expected: tuple[pa.DataType, ...]) -> bool:
    if pa.types.is_list(actual) or pa.types.is_large_list(actual):
        return any(pa.types.is_list(e) and actual.value_type == e.value_type for e in expected)
    return any(actual == e for e in expected)


def source_glob(source) -> str:
    """The parquet files behind a FileSource or SparkSource."""
    path = getattr(source, "path", None) or getattr(source, "file_options").uri
    return path if path.endswith(".parquet") else f"{path.rstrip('/')}/*.parquet"


def _unreadable(files: list[Path]) -> list[tuple[Path, str]]:
    """Files whose parquet footer cannot be read (truncated, corrupt, not parquet): each one named."""
    bad = []
    for f in files:
        try:
            pq.ParquetFile(f).metadata
        except (pa.ArrowException, OSError) as exc:
            bad.append((f, str(exc).split(". Either")[0]))
    return bad


def check_views(views) -> list[FieldCheck]:
    """Every field of every view against its table: present, right type, declared vector length."""
    problems: list[FieldCheck] = []
    for fv in views:
        glob = source_glob(fv.batch_source)
        table = glob.rsplit("/", 2)[0] if glob.endswith("/*.parquet") else glob
        files = sorted(Path(glob).parent.glob(Path(glob).name)) if "*" in glob else [Path(glob)]
        if not files:
            problems.append(FieldCheck(fv.name, table, "*", "no parquet files: run the Spark jobs first"))
            continue
        unreadable = _unreadable(files)
        if unreadable:
            problems += [FieldCheck(fv.name, table, "*", f"cannot read {f}: {reason}") for f, reason in unreadable]
            continue
        schema = ds.dataset([str(f) for f in files], format="parquet").schema
        wanted = [fv.batch_source.timestamp_field] + list(fv.join_keys) + (
            [fv.batch_source.created_timestamp_column] if fv.batch_source.created_timestamp_column else [])
        for column in wanted:
            if column not in schema.names:
                problems.append(FieldCheck(fv.name, table, column, "key/timestamp column missing"))
        head = pq.ParquetFile(files[0])
        first = head.read_row_group(0) if head.num_row_groups else None
        for field in fv.features:
            if field.name not in schema.names:
                problems.append(FieldCheck(fv.name, table, field.name, f"column missing (declared {field.dtype})"))
                continue
            actual = schema.field(field.name).type
            if not _types_match(actual, _expected_arrow(field.dtype)):
                problems.append(FieldCheck(fv.name, table, field.name, f"type {actual} does not match declared {field.dtype}"))
                continue
            dim = (field.tags or {}).get("dim")
            if dim and first is not None and first.num_rows:
                lengths = pc.list_value_length(first.column(field.name)).drop_null()
                lengths_seen = set(pc.unique(lengths).to_pylist())
                if (field.tags or {}).get("empty_allowed") == "true":
                    lengths_seen.discard(0)
                if lengths_seen and lengths_seen != {int(dim)}:
                    problems.append(FieldCheck(fv.name, table, field.name,
                                               f"vector length {sorted(lengths_seen)} in the table, feature view declares {dim}"))
    return problems


def declared_views(repo: Path | str, table_root: str | Path | None, fs_yaml: Path):
    """The feature views features.py declares under this config (parsed, not yet applied)."""
    from feast.repo_operations import parse_repo

    os.environ.update(repo_env(table_root, fs_yaml))
    for name in [m for m in sys.modules if m == "features" or m.endswith(".features")]:
        sys.modules.pop(name, None)
    repo = str(Path(repo).resolve())
    sys.path.insert(0, repo)
    try:
        with contextlib.chdir(repo):  # parse_repo names modules relative to the working directory
            return parse_repo(Path(repo)).feature_views
    finally:
        sys.path.remove(repo)


def assert_no_drift(views) -> None:
    problems = check_views(views)
    if problems:
        lines = "\n".join(f"  - view {p.view}, table {p.table}, column {p.column}: {p.problem}" for p in problems)
        raise SchemaDriftError(f"{len(problems)} table/feature-view mismatch(es):\n{lines}")


def apply(config: str = "duckdb", repo: Path | str = REPO, table_root: str | Path | None = None) -> str:
    fs_yaml = yaml_path(config, repo)
    assert_no_drift(declared_views(repo, table_root, fs_yaml))
    return feast_cli(["apply"], config, repo, table_root).stdout


def materialize(config: str = "duckdb", repo: Path | str = REPO, table_root: str | Path | None = None,
                end: dt.datetime | None = None, start: dt.datetime | None = None,
                views: list[str] | None = None, engine: str = "feast") -> dict:
    """Materialise the online views up to ``end`` (default now).

    ``engine="feast"`` runs the feast CLI, whose materialisation holds every entity's latest row
    in one process; ``engine="spark"`` writes the same rows partition by partition from Spark tasks
    (``pipelines.store.materialize_spark``), with the same start/end rules below.

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
        from pipelines.store import materialize_spark

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
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; write e.g. {text}Z or {text}+00:00")
    return value


def _parser(prog: str, doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--root", required=True, help="table root the Spark jobs wrote")
    parser.add_argument("--config", default="duckdb", help=f"one of {sorted(CONFIGS)} or a yaml in feature_repo/")
    parser.add_argument("--repo", default=str(REPO), help="Feast repo directory (default %(default)s)")
    return parser


def main_apply(argv: list[str] | None = None) -> int:
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

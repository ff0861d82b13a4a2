"""Tests import the checkout's code, never another installed copy; and the checkout's imports run
one way, down the floors of the house (README, "Layout").

The floors, bottom up (each may import the ones named in ``ALLOWED``, never one above or beside it):

    mmfs.core                      contracts, shared feature rules, event rules and landing types, files
    mmfs.pipelines                 the Spark plumbing and jobs, the encoders, synth, implicit
    mmfs.store, mmfs.model         the Feast side; the models and their training
    mmfs.online                    the online store's reads
    mmfs.serving, mmfs.streaming   the scorer and its app; mmfs stream
    mmfs.checks                    parity and consistency
    mmfs.cli                       the mmfs command
"""
import ast
import tomllib
from pathlib import Path

import mmfs

REPO = Path(__file__).resolve().parents[1]
# The package map of pyproject.toml: a folder of the checkout -> its name in the mmfs namespace.
PACKAGE_DIRS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
FOLDERS = {folder: package for package, folder in PACKAGE_DIRS.items()}


def test_the_namespace_is_the_checkouts():
    """``mmfs`` and every subpackage load from this checkout's folders (the editable install's map)."""
    import importlib

    assert Path(mmfs.__file__).resolve() == REPO / "mmfs" / "__init__.py", mmfs.__file__
    for package, folder in PACKAGE_DIRS.items():
        if (REPO / folder / "__init__.py").is_file():
            module = importlib.import_module(package)
            assert Path(module.__file__).resolve() == REPO / folder / "__init__.py", (package, module.__file__)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _source(module: str) -> Path | None:
    """The checkout's file for an ``mmfs`` module (through the package map), else None."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        folder = PACKAGE_DIRS.get(".".join(parts[:n]))
        if folder is not None:
            base = REPO.joinpath(folder, *parts[n:])
            for path in (base.with_suffix(".py"), base / "__init__.py"):
                if path.is_file():
                    return path
            return None
    return None


def _module_of(path: Path) -> str:
    """The module name of a checkout file: ``core/features/stats.py`` -> ``mmfs.core.features.stats``."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    package = FOLDERS.get(parts[0]) if parts else None
    return ".".join((package, *parts[1:])) if package else ".".join(parts)


# Lazy imports that load Spark on purpose, on a path the server never takes: ``materialize(engine="spark")``.
SPARK_ON_PURPOSE = {("store/feast_store.py", "mmfs.store.materialize_spark")}


def test_serving_never_reaches_pyspark():
    """The web server's code, and the checkout's modules it imports, transitively (lazy imports
    included), never import pyspark: serving imports the shared feature code, not Spark jobs."""
    seen, stack, paths = set(), [p for p in (REPO / "serving").glob("*.py")], {}
    while stack:
        path = stack.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            if (str(path.relative_to(REPO)), name) in SPARK_ON_PURPOSE:
                continue
            assert not name.startswith("pyspark"), f"{path.relative_to(REPO)} imports {name} (via {paths.get(path, 'serving')})"
            source = _source(name) if name.startswith("mmfs.") else None
            if source is not None and source not in seen:
                paths[source] = path.relative_to(REPO)
                stack.append(source)


# The floors, bottom up, and what each may import of the checkout's code (its own unit always).
# Everything else is an upward or sideways arrow: serving into Spark jobs, model into serving, ...
CORE, SPARK = "mmfs.core", "mmfs.pipelines.spark"
CONTRACTS, FEATURES, EVENTS, FILES = f"{CORE}.contracts", f"{CORE}.features", f"{CORE}.events", f"{CORE}.files"
IMAGES, ENCODERS, SYNTH = "mmfs.pipelines.images", "mmfs.pipelines.encoders", "mmfs.pipelines.synth"
IMPLICIT = "mmfs.pipelines.implicit"
ALLOWED = {
    CONTRACTS: set(),
    FEATURES: {CONTRACTS},
    EVENTS: {CONTRACTS, FEATURES, FILES},
    FILES: set(),  # the file operations the stream's state needs, on any file system
    IMAGES: set(),
    ENCODERS: {CORE, IMAGES},
    SPARK: {CORE, ENCODERS, IMAGES},  # the encode job's inference UDFs
    SYNTH: {CORE},
    IMPLICIT: {CORE},
    "mmfs.pipelines.jobs": {CORE, SPARK, ENCODERS, IMAGES, SYNTH},
    "mmfs.store": {CORE, SPARK},  # Spark only for materialize(engine="spark")
    "mmfs.model": {CORE, SPARK},  # Spark only for train --distributed (TorchDistributor)
    "mmfs.online": {CORE, "mmfs.store"},
    "mmfs.serving": {CORE, "mmfs.store", "mmfs.online", "mmfs.model"},
    "mmfs.streaming": {CORE, SPARK, "mmfs.store", "mmfs.online", "mmfs.model"},  # nothing of serving
    "mmfs.checks": {CORE, SPARK, "mmfs.store", "mmfs.online", "mmfs.model"},
    "mmfs.cli": {"mmfs"},  # the command, above everything
    "mmfs": set(),  # the namespace's own __init__
    "mmfs.__main__": {"mmfs.cli"},  # python -m mmfs
    "mmfs.feature_repo": set(),  # static Feast declarations
    "benchmarks": {"mmfs", "tests.support"},
    "tests": {"mmfs", "tests.support"},
    "tests.support": {"mmfs"},  # fixtures and servers: what benchmarks may borrow
}
SOURCE_FOLDERS = tuple(PACKAGE_DIRS.values())
OURS = (*SOURCE_FOLDERS, "tests", "benchmarks")


def _unit(module: str) -> str | None:
    """The ALLOWED key a module belongs to (the longest matching prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in ALLOWED:
            return ".".join(parts[:n])
    return None


def _upward_arrows(files) -> list[str]:
    bad = []
    for path in files:
        rel = str(path.relative_to(REPO))
        unit = _unit(_module_of(path))
        for name in sorted(_imports(path), key=len):  # `from a.b import c` reports a.b, not a.b.c too
            if any(b.startswith(f"{rel} ({unit}) imports {name.rsplit('.', 1)[0]} (") for b in bad):
                continue
            if name.split(".")[0] not in ("mmfs", "tests") or name in ("mmfs", "tests"):
                continue
            target = _unit(name)
            if target is None or target == unit or (unit.startswith("tests") and target.startswith("tests")):
                continue
            if not any(target == a or target.startswith(a + ".") for a in ALLOWED[unit]):
                bad.append(f"{rel} ({unit}) imports {name} ({target})")
    return bad


def _checkout_files():
    return [p for d in OURS for p in (REPO / d).rglob("*.py")]


def test_every_file_has_a_floor():
    """No source file falls outside the floors (a new package must be given its place above)."""
    assert not [str(p.relative_to(REPO)) for p in _checkout_files() if _unit(_module_of(p)) is None]


def test_imports_run_one_way():
    """Walks every import (lazy ones included) with the AST: none runs upward or sideways."""
    assert not _upward_arrows(_checkout_files())


def test_the_rule_catches_an_upward_import(monkeypatch):
    """The check is live: a model file that imports serving, and a stream file that imports the
    scorer's package, are reported."""
    fakes = {REPO / "model" / "_upward_probe.py": "from mmfs.serving.scorer import Scorer\n",
             REPO / "streaming" / "_sideways_probe.py": "def f():\n    from mmfs.serving import app\n"}
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: fakes[self] if self in fakes else real(self, *a, **k))
    assert _upward_arrows(_checkout_files() + list(fakes)) == [
        "model/_upward_probe.py (mmfs.model) imports mmfs.serving.scorer (mmfs.serving)",
        "streaming/_sideways_probe.py (mmfs.streaming) imports mmfs.serving (mmfs.serving)"]


def _graph(files) -> dict[str, set[str]]:
    graph = {}
    for path in files:
        module = _module_of(path)
        if not module.startswith("mmfs"):
            continue
        targets = {_source(n) for n in _imports(path) if n.startswith("mmfs.")}
        graph[module] = {_module_of(t) for t in targets if t is not None} - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    state, cycle = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycle.append(" -> ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycle


def test_no_import_circle():
    """The module graph of the library (lazy imports included) has no cycle."""
    assert not _cycles(_graph(_checkout_files()))


def test_the_circle_check_is_live():
    graph = _graph(_checkout_files())
    graph["mmfs.core.contracts.names"] = graph["mmfs.core.contracts.names"] | {"mmfs.core.features.stats"}
    graph["mmfs.core.features.stats"] = graph["mmfs.core.features.stats"] | {"mmfs.core.contracts.names"}
    assert _cycles(graph)

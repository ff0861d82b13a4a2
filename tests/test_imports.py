"""Tests import the checkout's code, never a test package or another installed copy; and the
checkout's imports run one way, downward through the layers (README, "Layout")."""
from pathlib import Path

import model
import pipelines
import serving
import streaming

REPO = Path(__file__).resolve().parents[1]


def test_source_packages_are_the_checkouts():
    for package in (pipelines, model, serving, streaming):
        assert Path(package.__file__).resolve() == REPO / package.__name__ / "__init__.py", package.__file__


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _source(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


# Lazy imports that load Spark on purpose, on a path the server never takes: ``materialize(engine="spark")``.
SPARK_ON_PURPOSE = {("pipelines/store/feast_store.py", "pipelines.store.materialize_spark")}


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
            source = _source(name) if name.split(".")[0] in {"pipelines", "model", "serving"} else None
            if source is not None and source not in seen:
                paths[source] = path.relative_to(REPO)
                stack.append(source)


# The layers, bottom up, and what each may import of the checkout's code (its own package always).
# Everything else is an upward or sideways arrow: serving into Spark jobs, model into serving, ...
CONTRACTS, FEATURES, SPARK = "pipelines.contracts", "pipelines.features", "pipelines.spark"
ALLOWED = {
    CONTRACTS: set(),
    FEATURES: {CONTRACTS},
    SPARK: {CONTRACTS, FEATURES, "pipelines.encoders", "pipelines.images"},  # the encode job's inference UDFs
    "pipelines.images": set(),
    "pipelines.encoders": {CONTRACTS, "pipelines.images"},
    "pipelines.synth": {CONTRACTS},
    "pipelines.jobs": {CONTRACTS, FEATURES, SPARK, "pipelines.encoders", "pipelines.images", "pipelines.synth"},
    "pipelines.store": {CONTRACTS, FEATURES, SPARK},  # Spark only for materialize(engine="spark")
    "model": {CONTRACTS, FEATURES, SPARK},  # Spark only for train --distributed (TorchDistributor)
    "serving": {CONTRACTS, FEATURES, "pipelines.store", "model"},
    # mmfs stream: a Spark job that applies events with the serving layer's online reader and event
    # rules; nothing below imports it.
    "streaming": {"pipelines", "model", "serving"},
    "pipelines.cli": {"pipelines", "model", "serving", "streaming"},  # the entry point, above everything
    "feature_repo": set(),
    "benchmarks": {"pipelines", "model", "serving", "streaming", "tests.support"},
    "tests": {"pipelines", "model", "serving", "streaming", "feature_repo"},
    "tests.support": {"pipelines", "model", "serving", "streaming"},  # fixtures and servers: what benchmarks may borrow
}
OURS = ("pipelines", "model", "serving", "streaming", "tests", "benchmarks", "feature_repo")


def _unit(module: str) -> str | None:
    """The ALLOWED key a module belongs to (the longest matching prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in ALLOWED:
            return ".".join(parts[:n])
    return None


def _module_of(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _upward_arrows(files) -> list[str]:
    bad = []
    for path in files:
        source = _module_of(path)
        unit = _unit(source)
        for name in sorted(_imports(path), key=len):  # `from a.b import c` reports a.b, not a.b.c too
            if any(b.startswith(f"{path.relative_to(REPO)} ({unit}) imports {name.rsplit('.', 1)[0]} (") for b in bad):
                continue
            if name.split(".")[0] not in OURS or name in ("pipelines", "model", "serving", "tests"):
                continue
            target = _unit(name)
            if target is None or target == unit or (unit.startswith("tests") and target.startswith("tests")):
                continue
            if not any(target == a or target.startswith(a + ".") for a in ALLOWED[unit]):
                bad.append(f"{path.relative_to(REPO)} ({unit}) imports {name} ({target})")
    return bad


def _checkout_files():
    return [p for d in OURS for p in (REPO / d).rglob("*.py")]


def test_imports_run_one_way():
    """Walks every import (lazy ones included) with the AST: none runs upward or sideways."""
    assert not _upward_arrows(_checkout_files())


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The check is live: a model file that imports serving is reported."""
    fake = REPO / "model" / "_upward_probe.py"
    files = _checkout_files() + [fake]
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "from serving.scorer import Scorer\n" if self == fake else real(self, *a, **k))
    assert _upward_arrows(files) == ["model/_upward_probe.py (model) imports serving.scorer (serving)"]


def test_no_import_circle():
    """The module graph of the library (lazy imports included) has no cycle."""
    graph = {}
    for path in _checkout_files():
        module = _module_of(path)
        if module.split(".")[0] not in ("pipelines", "model", "serving"):
            continue
        graph[module] = {n for n in _imports(path) if _source(n) is not None and _module_of(_source(n)) != module
                         and n.split(".")[0] in ("pipelines", "model", "serving")}
        graph[module] = {_module_of(_source(n)) for n in graph[module]} - {module}
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
    assert not cycle

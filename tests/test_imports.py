"""Tests import the checkout's code, never a test package or another installed copy."""
from pathlib import Path

import model
import pipelines
import serving

REPO = Path(__file__).resolve().parents[1]


def test_source_packages_are_the_checkouts():
    for package in (pipelines, model, serving):
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

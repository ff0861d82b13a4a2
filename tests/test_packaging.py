"""The wheel's package list (pyproject.toml) covers the tree: every package folder of the mapped
top-level folders is listed, so no module is left out of an installed mmfs, and nothing else is
installed at the top level (``.ci/run`` checks the built wheel itself)."""
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder(package: str) -> Path:
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        root = SETUPTOOLS["package-dir"].get(".".join(parts[:n]))
        if root is not None:
            return REPO.joinpath(root, *parts[n:])
    raise AssertionError(f"{package} is outside the package map")


def test_every_package_folder_is_listed_and_every_listed_package_exists():
    listed = set(SETUPTOOLS["packages"])
    found = set()
    for package, root in SETUPTOOLS["package-dir"].items():
        for init in (REPO / root).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / root)
            found.add(".".join((package, *rel.parts)))
    assert found - listed == set(), "package folders missing from pyproject's packages"
    assert all(_folder(p).is_dir() for p in listed)
    assert all(p == "mmfs" or p.startswith("mmfs.") for p in listed)


def test_the_feast_repo_ships_as_package_data():
    data = SETUPTOOLS["package-data"]["mmfs.feature_repo"]
    from mmfs.store.repo import REPO_FILES

    shipped = {p.name for pattern in data for p in _folder("mmfs.feature_repo").glob(pattern)}
    assert set(REPO_FILES) <= shipped

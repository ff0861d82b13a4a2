"""The Feast repo a command works over: mmfs init writes one, mmfs apply records it with the table
root, and every command finds it (--repo, else the recorded one, else the packaged one); the
packaged repo keeps its state with the tables, a user's repo in its own data/."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from mmfs.store import feast_store, repo as repos
from tests.support.feast_tables import copy_repo


def test_init_writes_the_packaged_declarations_and_refuses_to_overwrite(tmp_path, capsys):
    dest = tmp_path / "mine"
    assert repos.main_init([str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(repos.REPO_FILES)
    for name in repos.REPO_FILES:
        assert (dest / name).read_bytes() == (repos.PACKAGED_REPO / name).read_bytes()
    assert "MMFS_TABLE_ROOT" in capsys.readouterr().out  # how to use it with the plain Feast CLI
    (dest / "features.py").write_text("# my edits\n")
    with pytest.raises(FileExistsError, match="features.py"):
        repos.init_repo(dest)
    assert (dest / "features.py").read_text() == "# my edits\n"
    repos.init_repo(dest, force=True)
    assert (dest / "features.py").read_bytes() == (repos.PACKAGED_REPO / "features.py").read_bytes()


def test_find_repo_takes_the_flag_then_the_roots_record_then_the_packaged_one(tmp_path):
    root, mine, other = tmp_path / "root", copy_repo(tmp_path / "a"), copy_repo(tmp_path / "b")
    root.mkdir()
    assert repos.find_repo(None, root) == repos.PACKAGED_REPO
    repos.record_repo(mine, root)
    assert repos.find_repo(None, root) == mine.resolve()
    assert repos.find_repo(other, root) == other.resolve()
    assert repos.find_repo("packaged", root) == repos.PACKAGED_REPO
    repos.record_repo(repos.PACKAGED_REPO, root)
    assert repos.find_repo(None, root) == repos.PACKAGED_REPO
    with pytest.raises(repos.RepoNotFound, match="mmfs init"):
        repos.find_repo(tmp_path / "nothing_here", root)
    repos.record_repo(mine, root)
    shutil.rmtree(mine)
    with pytest.raises(repos.RepoNotFound, match=str(root)):  # a recorded repo that moved away is named, not skipped
        repos.find_repo(None, root)


def test_apply_records_the_repo_and_later_commands_on_the_root_use_it(tiny_root, tmp_path, monkeypatch):
    monkeypatch.delenv(repos.STATE_DIR_ENV, raising=False)
    root, _ = tiny_root
    tables = tmp_path / "tables"
    shutil.copytree(root, tables, ignore=shutil.ignore_patterns("_feast"))
    mine = repos.init_repo(tmp_path / "mine")
    feast_store.apply("duckdb", mine, tables)
    assert json.loads((tables / "_feast" / "repo.json").read_text()) == {"repo": str(mine.resolve())}
    assert (mine / "data" / "registry.db").is_file() and (mine / "encoders.yaml").is_file()
    store = feast_store.open_store("duckdb", None, tables)  # --root alone
    assert str(store.config.registry.path).startswith(str(mine.resolve() / "data"))
    assert store.get_feature_service("ctr_dmf_v1")


def test_the_packaged_repo_keeps_its_store_with_the_tables(tiny_root, tmp_path, monkeypatch):
    """mmfs apply over the packaged repo writes the registry under <root>/_feast, never inside the
    package; two roots get two stores; MMFS_STATE_DIR names another place."""
    root, _ = tiny_root
    monkeypatch.delenv(repos.STATE_DIR_ENV, raising=False)
    tables = tmp_path / "a"
    shutil.copytree(root, tables, ignore=shutil.ignore_patterns("_feast"))
    packaged_files = sorted(p.relative_to(repos.PACKAGED_REPO) for p in repos.PACKAGED_REPO.rglob("*") if "__pycache__" not in p.parts)
    feast_store.apply("duckdb", None, tables)
    assert (tables / "_feast" / "registry.db").is_file() and (tables / "encoders.yaml").is_file()
    assert sorted(p.relative_to(repos.PACKAGED_REPO) for p in repos.PACKAGED_REPO.rglob("*") if "__pycache__" not in p.parts) == packaged_files
    store = feast_store.open_store("duckdb", None, tables)
    assert str(store.config.registry.path).startswith(str(tables / "_feast"))
    assert store.config.online_store.path == str(tables.resolve() / "_feast" / "online_store.db")

    assert repos.state_dir(repos.PACKAGED_REPO, tmp_path / "b") == (tmp_path / "b").resolve() / "_feast"
    mine = copy_repo(tmp_path / "own")
    assert repos.state_dir(mine, tables) == mine.resolve() / "data"  # the user's own repo keeps its data/
    with pytest.raises(repos.NoStateDir, match="--root"):
        repos.state_dir(repos.PACKAGED_REPO, None)
    monkeypatch.setenv(repos.STATE_DIR_ENV, str(tmp_path / "elsewhere"))
    assert repos.state_dir(repos.PACKAGED_REPO, tables) == (tmp_path / "elsewhere").resolve()


def test_features_py_names_the_missing_table_root(tmp_path):
    """Without MMFS_TABLE_ROOT the declarations refuse to load, rather than declare some other tables."""
    env = {k: v for k, v in os.environ.items() if k != "MMFS_TABLE_ROOT"}
    done = subprocess.run([sys.executable, str(repos.PACKAGED_REPO / "features.py")], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "set MMFS_TABLE_ROOT" in done.stderr


@pytest.mark.integration
def test_plain_feast_plan_and_apply_accept_an_init_repo(tiny_root, tmp_path):
    """The documented environment is all the plain Feast CLI needs in a repo mmfs init wrote."""
    root, _ = tiny_root
    mine = repos.init_repo(tmp_path / "mine")
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    env = {**os.environ, "MMFS_TABLE_ROOT": str(root), "MMFS_FEAST_STATE": str(mine / "data")}
    for command in (["plan"], ["apply"]):
        done = subprocess.run([feast, *command], cwd=mine, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert (mine / "data" / "registry.db").is_file()
    assert "ctr_dmf_v1" in done.stdout

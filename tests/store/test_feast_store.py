"""mmfs apply: schema drift between a table and its feature view fails with the column named."""
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mmfs.store import feast_store
from mmfs.store.feast_store import SchemaDriftError
from tests.support.feast_tables import copy_repo


def rewrite(table_dir, change):
    for path in table_dir.glob("*.parquet"):
        pq.write_table(change(pq.read_table(path)), path)


def test_drift_fails_apply_naming_view_table_and_column(tiny_root, tmp_path):
    root, _ = tiny_root
    drifted = tmp_path / "tables"
    shutil.copytree(root, drifted)
    rewrite(drifted / "item_stats", lambda t: t.drop_columns(["clicks"]))
    rewrite(drifted / "item_embeddings", lambda t: t.set_column(
        t.schema.get_field_index("mm_emb"), "mm_emb",
        pa.array([v + [0.0] for v in t.column("mm_emb").to_pylist()], pa.list_(pa.float32()))))
    rewrite(drifted / "target_similarity", lambda t: t.set_column(
        t.schema.get_field_index("target_has_emb"), "target_has_emb", pc.cast(t.column("target_has_emb"), pa.int32())))
    repo = copy_repo(tmp_path)
    with pytest.raises(SchemaDriftError) as error:
        feast_store.apply("duckdb", repo, drifted)
    message = str(error.value)
    assert "3 table/feature-view mismatch" in message
    assert "view item_stats" in message and "column clicks: column missing" in message
    assert "column mm_emb: vector length [3] in the table, feature view declares 2" in message
    assert "column target_has_emb: type int32 does not match declared Bool" in message
    assert not (repo / "data" / "registry.db").exists()  # nothing was applied


def test_cli_reports_drift_as_an_error_exit(tiny_root, tmp_path, capsys):
    root, _ = tiny_root
    drifted = tmp_path / "tables"
    shutil.copytree(root, drifted)
    rewrite(drifted / "user_sequence_snapshots", lambda t: t.drop_columns(["hist_ts_us"]))
    repo = copy_repo(tmp_path)
    assert feast_store.main_apply(["--root", str(drifted), "--repo", str(repo)]) == 2
    assert "view user_sequence" in capsys.readouterr().err


def test_a_registry_applied_for_other_tables_is_refused_naming_both(applied_repo, tmp_path):
    """training-set --root B over a registry applied for root A must not mix A's features with B's events."""
    repo, root = applied_repo
    other = tmp_path / "other_tables"
    shutil.copytree(root, other)
    assert feast_store.open_store("duckdb", repo, root).get_feature_service("ctr_dmf_v1")  # its own root: fine
    with pytest.raises(feast_store.StoreRootMismatch) as refused:
        feast_store.open_store("duckdb", repo, other)
    assert str(root) in str(refused.value) and str(other) in str(refused.value)
    from mmfs.store import training_set

    with pytest.raises(feast_store.StoreRootMismatch):
        training_set.main(["--root", str(other), "--repo", str(repo), "--out", str(tmp_path / "set")])
    assert not (tmp_path / "set").exists()


def test_feast_ui_serves_our_views_and_services(applied_repo):
    """Feast's web UI (``mmfs ui``) over our repo: its REST registry API lists every view and
    service, and the UI page itself is served (needs feast[grpcio])."""
    from fastapi.testclient import TestClient
    from feast import ui_server

    repo, root = applied_repo
    store = feast_store.open_store("duckdb", repo, root)
    client = TestClient(ui_server.get_app(store, store.project))
    views = {v["spec"]["name"] for v in client.get("/api/v1/feature_views", params={"project": "mmfs"}).json()["featureViews"]}
    assert {"user_sequence", "user_stats", "item_stats", "item_embeddings", "target_similarity"} <= views
    services = {s["spec"]["name"] for s in client.get("/api/v1/feature_services", params={"project": "mmfs"}).json()["featureServices"]}
    assert {"ctr_dmf_v1", "ctr_din_v1", "ctr_mmctr_din_v1", "ctr_diffmsin_v1"} <= services
    page = client.get("/")
    assert page.status_code == 200 and "<!doctype html>" in page.text.lower()
    assert client.get("/projects-list.json").json()["projects"][0]["id"] == "mmfs"


def test_a_corrupt_table_file_is_named_by_apply_and_training_set(tiny_root, tmp_path, capsys):
    from mmfs import cli

    root, _ = tiny_root
    broken = tmp_path / "tables"
    shutil.copytree(root, broken)
    repo = copy_repo(tmp_path)
    feast_store.apply("duckdb", repo, broken)
    victim = sorted((broken / "item_stats").glob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated: no footer
    for argv in (["apply", "--root", str(broken), "--repo", str(repo)],
                 ["training-set", "--root", str(broken), "--repo", str(repo), "--out", str(tmp_path / "set")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"cannot read {victim}" in err and "Traceback" not in err, err
    assert not (tmp_path / "set").exists()


def _online_tables(path):
    import sqlite3

    with sqlite3.connect(path) as con:
        return sorted(name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def test_apply_on_a_copied_or_moved_root_never_touches_the_source(tiny_root, tmp_path, monkeypatch):
    """cp -r A B; mmfs apply --root B: B's copied registry named A's online store, and Feast's apply
    dropped A's tables. Now the registry follows B, A keeps every table, and a moved root applies."""
    from mmfs.store.repo import STATE_DIR_ENV
    from mmfs.store.registry_file import follow_root

    monkeypatch.delenv(STATE_DIR_ENV, raising=False)
    root, _ = tiny_root
    a = tmp_path / "a"
    shutil.copytree(root, a, ignore=shutil.ignore_patterns("_feast"))
    feast_store.apply("duckdb", None, a)
    before = _online_tables(a / "_feast" / "online_store.db")
    assert len(before) >= 4
    b = tmp_path / "b"
    shutil.copytree(a, b)
    with pytest.raises(feast_store.StoreRootMismatch):  # the copy's registry still reads A's tables
        feast_store.open_store("duckdb", None, b)
    printed = feast_store.apply("duckdb", None, b)
    assert _online_tables(a / "_feast" / "online_store.db") == before  # the source keeps its store
    assert "a copied or moved root" in printed
    assert _online_tables(b / "_feast" / "online_store.db") == before
    assert follow_root(b / "_feast" / "registry.db", b / "_feast" / "online_store.db") == []  # it names B's file now
    feast_store.open_store("duckdb", None, a).get_feature_service("ctr_dmf_v1")  # both open, each on its own tables
    feast_store.open_store("duckdb", None, b).get_feature_service("ctr_dmf_v1")
    moved = tmp_path / "moved"
    shutil.move(str(a), str(moved))
    feast_store.apply("duckdb", None, moved)  # no FileNotFoundError on the old root's folder
    assert not a.exists() and _online_tables(moved / "_feast" / "online_store.db") == before


def test_an_unreadable_registry_is_an_error_not_a_skipped_check(applied_repo, tmp_path):
    repo, root = applied_repo
    own = tmp_path / "repo"
    shutil.copytree(repo, own)
    (own / "data" / "registry.db").write_bytes(b"not a registry")
    with pytest.raises(feast_store.RegistryUnreadable, match="cannot read the registry"):
        feast_store.open_store("duckdb", own, root)


def test_repos_whose_files_import_each_other_apply_twice_in_one_process(tiny_root, tmp_path):
    """A repo with a second file that imports features.py, applied twice and then beside another
    such repo, in one process (make bench-serving's Redis copy): each parse imports the files afresh,
    never the previous parse's modules (which made Feast see every view twice)."""
    from mmfs.store.repo import init_repo

    root, _ = tiny_root
    for name in ("a", "b"):
        repo = init_repo(tmp_path / name / "repo")
        (repo / "extra_services.py").write_text(
            "from feast import FeatureService\n\nfrom features import item_stats_fv, user_sequence_fv\n\n"
            "ctr_extra_v1 = FeatureService(name='ctr_extra_v1', features=[user_sequence_fv, item_stats_fv])\n")
        tables = tmp_path / name / "tables"
        shutil.copytree(root, tables, ignore=shutil.ignore_patterns("_feast", "encoders.yaml"))
        for _ in range(2):
            feast_store.apply("duckdb", repo, tables)
        assert feast_store.open_store("duckdb", repo, tables).get_feature_service("ctr_extra_v1").name == "ctr_extra_v1"
    import sys

    assert "mmfs.core.features" in sys.modules  # the library's own modules are never dropped

"""encoders.yaml: written by mmfs apply from the embedding tables' metadata, one entry per table."""
import json

import yaml

from mmfs.store import encoders_file


def _table(root, name, identity=None):
    (root / name).mkdir(parents=True)
    if identity is not None:
        (root / name / "_mmfs_meta.json").write_text(json.dumps({"encoder_identity": identity}))


def test_one_entry_per_embedding_table_with_its_recorded_lengths(tmp_path):
    _table(tmp_path, "item_embeddings", {"encoder_id": "e1", "mm_dim": 8, "text": {"dim": 16}, "image": {"dim": 32}})
    _table(tmp_path, "item_embeddings_v2", {"encoder_id": "e2", "mm_dim": 4, "text": {"dim": 16}})
    _table(tmp_path, "item_embeddings_v3")  # a backfill still being written: no encoder recorded yet
    path = tmp_path / "encoders.yaml"
    found = encoders_file.write(path, tmp_path)
    assert [(e["version"], e["table"], e["encoder_id"], e["mm_dim"], e["image_dim"]) for e in found] == [
        ("v1", "item_embeddings", "e1", 8, 32), ("v2", "item_embeddings_v2", "e2", 4, encoders_file.DEFAULT_DIMS["image_dim"])]
    assert yaml.safe_load(path.read_text())["encoders"] == found
    stamp = path.stat().st_mtime_ns
    encoders_file.write(path, tmp_path)
    assert path.stat().st_mtime_ns == stamp  # unchanged content is not rewritten


def test_a_root_without_embeddings_declares_v1_with_the_default_lengths(tmp_path):
    assert encoders_file.entries(tmp_path) == [{"version": "v1", "table": "item_embeddings", "encoder_id": "", **encoders_file.DEFAULT_DIMS}]


def test_it_lives_with_the_tables_for_the_packaged_repo_and_beside_features_py_in_a_users(tmp_path):
    assert encoders_file.encoders_path(tmp_path / "pkg", tmp_path / "root", packaged=True) == tmp_path / "root" / "encoders.yaml"
    assert encoders_file.encoders_path(tmp_path / "mine", tmp_path / "root", packaged=False) == tmp_path / "mine" / "encoders.yaml"

import numpy as np
import pytest

from mmfs.pipelines.jobs import encode_items
from mmfs.pipelines.encoders import EncoderConfig, EncoderLoadError
from mmfs.pipelines.spark.schemas import ITEMS_SCHEMA
from tests.support.times import ts
from tests.support.images import image_roots, make_image_files

T0 = ts("2020-01-01 00:00:00")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def items(spark, folder):
    images = make_image_files(folder)
    rows = [
        (1, "Chelsea the cat", "a tabby cat", images["rgb"]),
        (2, "Camera man", "black and white photo", images["gray"]),
        (3, "Transparent cat", "cat with alpha", images["rgba"]),
        (4, "Coffee in CMYK", "a cup of coffee", images["cmyk"]),
        (5, "Broken file", "corrupt png", images["corrupt"]),
        (6, "Empty file", "zero bytes", images["empty"]),
        (7, "Gone", "missing file", images["missing"]),
        (8, "No picture", "text only item", None),
        (9, "Coffee again", "espresso", images["coffee"]),
        (10, "Bomb", "30000 x 30000 declared", images["bomb"]),
        (11, "Huge", "48 megapixels", images["huge"]),
        (12, "Unreadable", "a path that cannot be read", images["unreadable"]),
        (13, "Secret", "a file outside the image roots", images["outside"]),
    ]
    return spark.createDataFrame([(i, t, x, u, True, T0, T0) for i, t, x, u in rows], ITEMS_SCHEMA)


def run(spark, items, tmp_path, config=None, mm_dim=8, folder=None):
    config = config or EncoderConfig(batch_size=4, image_roots=image_roots(folder))
    result = encode_items.transform(spark, items, config, mm_dim, str(tmp_path / "staging"), 2, 1.0)
    return result, {r.item_id: r for r in result["item_embeddings"].collect()}


@pytest.fixture(scope="module")
def encoded(spark, items, folder, tmp_path_factory):
    return run(spark, items, tmp_path_factory.mktemp("encoded"), folder=folder)


def test_bad_images_are_quarantined_and_their_items_keep_text(encoded):
    result, rows = encoded
    assert sorted(rows) == list(range(1, 14))  # no item lost
    assert {i for i, r in rows.items() if r.has_image} == {1, 2, 3, 4, 9}
    for i, r in rows.items():
        assert len(r.text_emb) == 384
        assert (r.image_emb is None) == (not r.has_image)
        assert len(r.mm_emb) == 8
        assert abs(np.linalg.norm(r.mm_emb) - 1) < 1e-5
        assert r.encoder_id == result["identity"]["encoder_id"]
    reasons = {int(r.row_json.split('"item_id":')[1].split(",")[0]): r.reason for r in result["quarantine_images"].collect()}
    assert sorted(reasons) == [5, 6, 7, 10, 11, 12, 13]  # the job went on past every one
    assert reasons[5].startswith("corrupt image") and reasons[6].startswith("zero-size") and reasons[7].startswith("missing image file")
    assert reasons[10].startswith("decompression bomb refused") and "over the limit" in reasons[11]
    assert all(reasons[i].startswith("image path outside the image root") for i in (12, 13))
    assert result["quarantine_embeddings"].count() == 0


def test_fused_embedding_follows_v4_parts(encoded):
    result, rows = encoded
    identity = result["identity"]
    assert identity["pca_dims"] == {"text": 4, "image": 4}
    assert identity["image"]["model"] == "efficientnet-lite0-imagenet"
    # An item without an image has zeros in the image half: its mm_emb is its text part alone.
    assert np.allclose(rows[8].mm_emb[4:], 0.0)
    # With an image both halves carry half the energy.
    assert np.isclose(np.linalg.norm(rows[1].mm_emb[:4]), np.sqrt(0.5), atol=1e-5)


def test_rerun_gives_the_same_features(spark, items, folder, encoded, tmp_path):
    first_result, first = encoded
    second_result, second = run(spark, items, tmp_path, folder=folder)
    assert first_result["identity"] == second_result["identity"]
    for item_id in first:
        np.testing.assert_allclose(first[item_id].mm_emb, second[item_id].mm_emb, atol=1e-6)
        np.testing.assert_allclose(first[item_id].text_emb, second[item_id].text_emb, atol=1e-6)


def test_unloadable_weights_stop_the_job_before_any_output(spark, items, tmp_path):
    with pytest.raises(EncoderLoadError):
        run(spark, items, tmp_path, config=EncoderConfig(text_model=str(tmp_path / "nope")))
    assert not (tmp_path / "staging").exists()


def _items_v1(spark):
    rows = [(i, f"Item {i}", f"text of item {i}", None, True, T0, T0) for i in range(1, 7)]
    return spark.createDataFrame(rows, ITEMS_SCHEMA)


@pytest.mark.slow  # four encoder runs (~2 min): make test-all; CI keeps the 20-minute budget
def test_incremental_run_encodes_only_changed_contents_and_equals_a_full_recompute(spark, tmp_path):
    import io
    import json

    from mmfs.pipelines.spark.table_io import write_table

    root = tmp_path / "root"
    write_table(_items_v1(spark), str(root / "items"))
    assert encode_items.main(["--root", str(root), "--image-model", "none", "--mm-dim", "4"]) == 0
    first_meta = json.loads((root / "item_embeddings" / "_mmfs_meta.json").read_text())

    # A new item, a new version of item 2 with new text, and a new version of item 3 with the same text.
    T1 = ts("2020-02-01 00:00:00")
    changed = spark.createDataFrame([
        (7, "Item 7", "text of a new item", None, True, T1, T1),
        (2, "Item 2", "rewritten text of item 2", None, True, T1, T1),
        (3, "Item 3", "text of item 3", None, True, T1, T1),
    ], ITEMS_SCHEMA)
    items_v2 = _items_v1(spark).unionByName(changed)
    write_table(items_v2, str(root / "items"))
    assert encode_items.main(["--root", str(root), "--image-model", "none", "--mm-dim", "4", "--incremental"]) == 0
    meta = json.loads((root / "item_embeddings" / "_mmfs_meta.json").read_text())
    assert meta["contents_encoded"] == 2  # item 7 and item 2's new text; item 3's new version reuses its encoding
    assert meta["encoder_identity"]["encoder_id"] == first_meta["encoder_identity"]["encoder_id"]  # same PCA, same id
    incremental = {(r.item_id, r.event_timestamp): r for r in spark.read.parquet(str(root / "item_embeddings")).collect()}
    assert len(incremental) == 9

    # The full recompute: every content encoded again, with the table's PCA.
    with np.load(io.BytesIO((root / "item_embeddings" / "_pca.npz").read_bytes())) as saved:
        pca = {k: saved[k] for k in saved.files}
    full = encode_items.transform(spark, items_v2, EncoderConfig(image_model="none"), 4, str(tmp_path / "staging"), 2, 1.0, pca=pca)
    assert full["identity"]["encoder_id"] == meta["encoder_identity"]["encoder_id"]
    recomputed = {(r.item_id, r.event_timestamp): r for r in full["item_embeddings"].collect()}
    assert recomputed.keys() == incremental.keys()
    for key, row in recomputed.items():
        np.testing.assert_allclose(incremental[key].mm_emb, row.mm_emb, atol=1e-5)
        np.testing.assert_allclose(incremental[key].text_emb, row.text_emb, atol=1e-5)
        assert (incremental[key].created_timestamp, incremental[key].has_image) == (row.created_timestamp, row.has_image)

    # Another encoder cannot be mixed into the table incrementally: it is refused before any encoding.
    with pytest.raises(encode_items.EncoderChanged, match="item_embeddings_v2"):
        encode_items.main(["--root", str(root), "--image-model", "none", "--mm-dim", "4", "--incremental", "--text-max-length", "16"])

    # ... but a backfill writes it beside the deployed table, which it leaves byte for byte as it was.
    import hashlib

    def fingerprint(table):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / table).iterdir())}

    v1 = fingerprint("item_embeddings")
    assert encode_items.main(["--root", str(root), "--image-model", "none", "--mm-dim", "4", "--text-max-length", "16",
                              "--table", "item_embeddings_v2"]) == 0
    assert fingerprint("item_embeddings") == v1
    v2_meta = json.loads((root / "item_embeddings_v2" / "_mmfs_meta.json").read_text())
    assert v2_meta["encoder_identity"]["encoder_id"] != meta["encoder_identity"]["encoder_id"]
    assert v2_meta["items"] == 9


def test_the_image_root_is_read_or_the_job_stops_naming_the_file(spark, tmp_path):
    """The image root ingest recorded: used when recorded, "none" when ingest recorded none, and an
    error naming the file when the metadata is missing or unreadable (read as "no root", every image
    would be refused and the run silently text-only)."""
    items = tmp_path / "items"
    items.mkdir()
    with pytest.raises(SystemExit, match="has no _mmfs_meta.json"):
        encode_items.image_roots_of(spark, str(tmp_path))
    (items / "_mmfs_meta.json").write_text('{"job": "ingest", "image_root": "/data/pictures"')  # cut short
    with pytest.raises(SystemExit, match="cannot be read"):
        encode_items.image_roots_of(spark, str(tmp_path))
    (items / "_mmfs_meta.json").write_text('{"job": "ingest", "image_root": "/data/pictures"}')
    assert encode_items.image_roots_of(spark, str(tmp_path)) == ["/data/pictures"]
    (items / "_mmfs_meta.json").write_text('{"job": "ingest", "image_root": null}')
    assert encode_items.image_roots_of(spark, str(tmp_path)) == [encode_items.NO_IMAGE_ROOT]

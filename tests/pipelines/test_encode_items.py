import numpy as np
import pytest

from pipelines import encode_items
from pipelines.encoders import EncoderConfig, EncoderLoadError
from pipelines.schemas import ITEMS_SCHEMA
from tests.conftest import ts
from tests.pipelines.images import make_image_files

T0 = ts("2020-01-01 00:00:00")


@pytest.fixture(scope="module")
def items(spark, tmp_path_factory):
    images = make_image_files(tmp_path_factory.mktemp("images"))
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
    ]
    return spark.createDataFrame([(i, t, x, u, True, T0, T0) for i, t, x, u in rows], ITEMS_SCHEMA)


def run(spark, items, tmp_path, config=EncoderConfig(batch_size=4), mm_dim=8):
    result = encode_items.transform(spark, items, config, mm_dim, str(tmp_path / "staging"), 2, 1.0)
    return result, {r.item_id: r for r in result["item_embeddings"].collect()}


@pytest.fixture(scope="module")
def encoded(spark, items, tmp_path_factory):
    return run(spark, items, tmp_path_factory.mktemp("encoded"))


def test_bad_images_are_quarantined_and_their_items_keep_text(encoded):
    result, rows = encoded
    assert sorted(rows) == list(range(1, 10))  # no item lost
    assert {i for i, r in rows.items() if r.has_image} == {1, 2, 3, 4, 9}
    for i, r in rows.items():
        assert len(r.text_emb) == 384
        assert (r.image_emb is None) == (not r.has_image)
        assert len(r.mm_emb) == 8
        assert abs(np.linalg.norm(r.mm_emb) - 1) < 1e-5
        assert r.encoder_id == result["identity"]["encoder_id"]
    reasons = {int(r.row_json.split('"item_id":')[1].split(",")[0]): r.reason for r in result["quarantine_images"].collect()}
    assert sorted(reasons) == [5, 6, 7]
    assert reasons[5].startswith("corrupt image") and reasons[6].startswith("zero-size") and reasons[7].startswith("missing image file")
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


def test_rerun_gives_the_same_features(spark, items, encoded, tmp_path):
    first_result, first = encoded
    second_result, second = run(spark, items, tmp_path)
    assert first_result["identity"] == second_result["identity"]
    for item_id in first:
        np.testing.assert_allclose(first[item_id].mm_emb, second[item_id].mm_emb, atol=1e-6)
        np.testing.assert_allclose(first[item_id].text_emb, second[item_id].text_emb, atol=1e-6)


def test_unloadable_weights_stop_the_job_before_any_output(spark, items, tmp_path):
    with pytest.raises(EncoderLoadError):
        run(spark, items, tmp_path, config=EncoderConfig(text_model=str(tmp_path / "nope")))
    assert not (tmp_path / "staging").exists()

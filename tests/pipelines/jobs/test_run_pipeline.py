"""End to end on the bundled MovieLens sample: ingest -> encode -> sequences -> similarity."""
from pathlib import Path

import duckdb
import numpy as np
import pytest

from mmfs.pipelines.jobs import run_pipeline
from mmfs.pipelines.spark.table_io import read_meta

MOVIELENS = str(Path(__file__).resolve().parents[3] / "data" / "movielens-small")


def check_outputs(spark, out: str, n_users: int | None):
    con = duckdb.connect()

    def count(table):
        return con.execute(f"select count(*) from '{out}/{table}/*.parquet'").fetchone()[0]

    events = count("events")
    assert events > 0
    assert count("sequences") == events == count("target_similarity")
    if n_users:
        assert con.execute(f"select count(distinct user_id) from '{out}/events/*.parquet'").fetchone()[0] == n_users
    # every event's item has an embedding (MovieLens items are stamped when first seen)
    assert con.execute(f"select bool_and(target_has_emb) from '{out}/target_similarity/*.parquet'").fetchone()[0]
    identity = read_meta(spark, f"{out}/item_embeddings")["encoder_identity"]
    assert read_meta(spark, f"{out}/target_similarity")["encoder_identity"] == identity
    assert identity["image"] is None and identity["mm_dim"] == 64  # MovieLens has no images

    # Recompute a few similarities by hand: plain dot products of the stored unit vectors.
    rows = con.execute(f"""
        select t.item_id, t.hist_item_ids, t.hist_sim from '{out}/target_similarity/*.parquet' t
        where t.hist_len >= 5 order by t.user_id, t.event_timestamp limit 20""").fetchall()
    vectors = dict(con.execute(f"select item_id, mm_emb from '{out}/item_embeddings/*.parquet'").fetchall())
    assert rows
    for target, hist, sims in rows:
        expected = [float(np.dot(vectors[target], vectors[h])) for h in hist]
        np.testing.assert_allclose(sims, expected, atol=1e-5)


def test_pipeline_on_a_movielens_sample(spark, tmp_path):
    out = str(tmp_path / "ml")
    run_pipeline.main(["--source", "movielens", "--input", MOVIELENS, "--out", out, "--max-users", "3"])
    check_outputs(spark, out, n_users=3)


@pytest.mark.slow
def test_pipeline_on_all_of_movielens(spark, tmp_path):
    out = str(tmp_path / "ml")
    run_pipeline.main(["--source", "movielens", "--input", MOVIELENS, "--out", out])
    check_outputs(spark, out, n_users=610)


def test_pipeline_on_synthetic_files_with_images(spark, tmp_path):
    """Your own files path: parquet items with drawn images, one of them corrupt, through every job."""
    from mmfs.pipelines import synth

    raw = tmp_path / "raw"
    synth.generate(raw, n_users=40, n_items=30, n_events=1500, n_images=12, seed=4)
    (raw / "images" / "3.png").write_bytes(b"not a png at all")
    (raw / "images" / "5.png").unlink()
    (raw / "images" / "5.png").symlink_to("/etc/passwd")  # an image path that leads out of the items' folder
    out = str(tmp_path / "out")
    run_pipeline.main(["--source", "files", "--items", str(raw / "items.parquet"), "--events", str(raw / "events.parquet"),
                       "--out", out])
    con = duckdb.connect()
    has_image = dict(con.execute(f"select item_id, has_image from '{out}/item_embeddings/*.parquet'").fetchall())
    assert len(has_image) == 30
    assert {i for i, h in has_image.items() if h} == set(range(1, 13)) - {3, 5}
    quarantined = sorted(con.execute(f"select rule, reason from '{out}/quarantine/item_images/*.parquet'").fetchall(), key=lambda r: r[1])
    assert [r[0] for r in quarantined] == ["image_decode"] * 2
    assert "3.png" in quarantined[0][1] and quarantined[1][1].startswith(f"image path outside the image root ({raw})")
    assert read_meta(spark, f"{out}/items")["image_root"] == str(raw)  # ingest records the items file's folder
    identity = read_meta(spark, f"{out}/item_embeddings")["encoder_identity"]
    assert identity["image"]["model"] == "efficientnet-lite0-imagenet" and identity["pca_dims"] == {"text": 32, "image": 32}
    assert con.execute(f"select count(*) from '{out}/target_similarity/*.parquet'").fetchone()[0] == 1500

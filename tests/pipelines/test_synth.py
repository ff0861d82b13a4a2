import numpy as np
import pyarrow.parquet as pq

from mmfs.pipelines import synth


def test_same_seed_same_data_and_the_planted_signal_is_there(tmp_path):
    a = synth.generate(tmp_path / "a", n_users=300, n_items=200, n_events=30_000, n_images=5, seed=11)
    b = synth.generate(tmp_path / "b", n_users=300, n_items=200, n_events=30_000, n_images=5, seed=11)
    assert a == b
    events_a = pq.read_table(tmp_path / "a" / "events.parquet")
    assert events_a.equals(pq.read_table(tmp_path / "b" / "events.parquet"))
    items = pq.read_table(tmp_path / "a" / "items.parquet").to_pandas()
    assert items["image_uri"].notna().sum() == 5
    assert (tmp_path / "a" / "images" / "1.png").read_bytes() == (tmp_path / "b" / "images" / "1.png").read_bytes()

    # Clicks concentrate on items whose colour (named in the text, drawn in the image) the user likes:
    # a user's clicked items share colours far more often than their skipped ones.
    events = events_a.to_pandas().merge(items[["item_id", "text"]], on="item_id")
    events["color"] = events["text"].str.split().str[2]
    top_share = []
    for label in (1, 0):
        subset = events[events["label"] == label]
        per_user = subset.groupby("user_id")["color"].agg(lambda c: c.value_counts(normalize=True).iloc[0])
        top_share.append(per_user.mean())
    assert top_share[0] > top_share[1] + 0.15


def test_different_seeds_differ(tmp_path):
    synth.generate(tmp_path / "a", n_users=50, n_items=40, n_events=500, n_images=0, seed=1)
    synth.generate(tmp_path / "b", n_users=50, n_items=40, n_events=500, n_images=0, seed=2)
    a = pq.read_table(tmp_path / "a" / "events.parquet")["label"].to_numpy()
    b = pq.read_table(tmp_path / "b" / "events.parquet")["label"].to_numpy()
    assert not np.array_equal(a, b)


def test_distinct_texts_give_one_text_per_item_and_the_same_events(tmp_path):
    plain = synth.generate(tmp_path / "a", n_users=50, n_items=5_000, n_events=2_000, n_images=0, seed=4)
    distinct = synth.generate(tmp_path / "b", n_users=50, n_items=5_000, n_events=2_000, n_images=0, seed=4, distinct_texts=True)
    assert plain == distinct
    a, b = (pq.read_table(tmp_path / d / "items.parquet").to_pandas() for d in "ab")
    assert a["text"].nunique() < 3_841 and b["text"].nunique() == 5_000
    assert all(y.startswith(x[:-1]) for x, y in zip(a["text"], b["text"]))  # the same words, a model number added
    assert pq.read_table(tmp_path / "a" / "events.parquet").equals(pq.read_table(tmp_path / "b" / "events.parquet"))

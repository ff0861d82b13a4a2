import numpy as np
from pyspark.sql import Row

from mmfs.pipelines.spark.schemas import ITEM_EMBEDDINGS_SCHEMA, SEQUENCES_SCHEMA
from mmfs.pipelines.jobs.target_similarity import output_rules, transform
from mmfs.pipelines.spark.validation import assert_valid_output
from tests.support.times import ts


def emb(item_id, vector, event, created=None):
    return Row(item_id=item_id, text_emb=[1.0], image_emb=None, mm_emb=[float(v) for v in vector], has_image=False,
               encoder_id="e1", event_timestamp=ts(event), created_timestamp=ts(created or event))


def seq(user_id, item_id, event, hist):
    return Row(user_id=user_id, item_id=item_id, event_timestamp=ts(event), label=1, hist_item_ids=hist,
               hist_timestamps=[ts("2000-01-01 00:00:00")] * len(hist), hist_len=len(hist))


def test_similarity_uses_embeddings_known_at_the_event_time(spark):
    embeddings = spark.createDataFrame([
        emb(1, [1, 0], "2020-01-01 00:00:00"),
        emb(2, [0, 1], "2020-01-01 00:00:00"),
        emb(2, [1, 0], "2020-06-01 00:00:00"),  # a new version of item 2 later on
        emb(3, [-1, 0], "2020-01-01 00:00:00", created="2020-12-01 00:00:00"),  # back-filled in December
        emb(4, [1, 1], "2020-03-01 00:00:00"),
    ], ITEM_EMBEDDINGS_SCHEMA)
    sequences = spark.createDataFrame([
        seq(9, 1, "2020-02-01 00:00:00", [2, 3, 4]),
        seq(9, 1, "2020-06-01 00:00:00", [2, 3, 4]),  # exactly when item 2's new version lands
        seq(9, 1, "2020-12-01 00:00:00", [3]),
        seq(9, 4, "2020-02-01 00:00:00", [1]),  # target not embedded yet
        seq(9, 1, "2020-02-01 00:00:01", []),
    ], SEQUENCES_SCHEMA)
    rows = {(r.item_id, r.event_timestamp): r for r in transform(sequences, embeddings, "e1").collect()}

    feb = rows[(1, ts("2020-02-01 00:00:00"))]
    assert feb.target_has_emb
    assert feb.hist_sim == [0.0, None, None]  # 3 is not known until December, 4 not until March
    june = rows[(1, ts("2020-06-01 00:00:00"))]
    assert june.hist_sim[0] == 1.0 and june.hist_sim[1] is None
    assert np.isclose(june.hist_sim[2], np.sqrt(0.5))
    assert rows[(1, ts("2020-12-01 00:00:00"))].hist_sim == [-1.0]
    cold = rows[(4, ts("2020-02-01 00:00:00"))]
    assert cold.target_has_emb is False and cold.hist_sim == [None]
    assert rows[(1, ts("2020-02-01 00:00:01"))].hist_sim == []
    assert all(r.encoder_id == "e1" for r in rows.values())


def test_output_contract_holds(spark):
    embeddings = spark.createDataFrame([emb(1, [1, 0], "2020-01-01 00:00:00"), emb(2, [0.6, 0.8], "2020-01-01 00:00:00")],
                                       ITEM_EMBEDDINGS_SCHEMA)
    sequences = spark.createDataFrame([seq(1, 1, "2021-01-01 00:00:00", [2, 1])], SEQUENCES_SCHEMA)
    out = transform(sequences, embeddings, "e1")
    assert np.allclose(out.first().hist_sim, [0.6, 1.0])
    assert assert_valid_output(out, output_rules()).success

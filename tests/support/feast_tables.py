"""A tiny table root with adversarial histories, and a Feast repo applied over it."""
import math
from pathlib import Path

import pytest
from pyspark.sql import Row

from mmfs.pipelines.jobs import item_stats, target_similarity, user_sequences, user_stats
from mmfs.pipelines.spark.schemas import EVENTS_SCHEMA, ITEM_EMBEDDINGS_SCHEMA
from mmfs.pipelines.spark.table_io import write_table
from mmfs.store.repo import init_repo
from datetime import datetime

ts = datetime.fromisoformat

# The tiny embedding table records its encoder as the encode job does: mmfs apply declares these lengths.
IDENTITY = {"encoder_id": "e", "mm_dim": 2, "text": {"dim": 1}, "image": {"dim": 3}}

EVENTS = [
    (1, 10, "2020-01-01 00:00:00", 1),
    (1, 11, "2020-01-01 00:00:00", 1),  # same instant as the one above
    (1, 12, "2020-01-01 00:00:00.000001", 1),  # one microsecond later
    (1, 13, "2020-01-02 00:00:00", 0),
    (1, 14, "2020-01-03 00:00:00", 1),
    (2, 10, "2020-01-01 00:00:00", 0),  # a user with no positives
    (2, 11, "2020-01-02 00:00:00.000001", 1),  # right after item 10's second version
    (3, 10, "2020-03-01 00:00:00", 1),  # after the back-filled version's event time, before it was written
    (3, 10, "2020-07-01 00:00:00", 0),  # after the backfill was written
]


def angle(degrees):
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


# (item, mm_emb angle, event_timestamp, created_timestamp)
EMBEDDINGS = [
    (10, 0, "2020-01-01 00:00:00", "2020-01-01 00:00:00"),
    (10, 90, "2020-01-02 00:00:00", "2020-01-02 00:00:00.000001"),  # known 1us after its event time
    (10, 180, "2020-02-01 00:00:00", "2020-06-01 00:00:00"),  # back-filled: written in June
    (11, 45, "2019-12-01 00:00:00", "2019-12-01 00:00:00"),
    (12, 60, "2019-12-01 00:00:00", "2019-12-01 00:00:00"),
    (14, 30, "2019-12-01 00:00:00", "2019-12-01 00:00:00"),
    # item 13 never gets an embedding
]


def embedding_rows():
    return [Row(item_id=i, text_emb=[1.0], image_emb=None, mm_emb=angle(a), has_image=False, encoder_id="e",
                event_timestamp=ts(e), created_timestamp=ts(c)) for i, a, e, c in EMBEDDINGS]


def write_tables(spark, root: Path, events=EVENTS, embeddings=None) -> dict:
    events_df = spark.createDataFrame([Row(user_id=u, item_id=i, event_timestamp=ts(t), label=l) for u, i, t, l in events], EVENTS_SCHEMA)
    write_table(events_df, str(root / "events"))
    emb = spark.createDataFrame(embeddings or embedding_rows(), ITEM_EMBEDDINGS_SCHEMA)
    write_table(emb, str(root / "item_embeddings"), meta={"job": "tests", "encoder_identity": IDENTITY})
    tables = user_sequences.transform(events_df, max_len=50)
    for name, df in tables.items():
        write_table(df, str(root / name))
    write_table(item_stats.transform(events_df), str(root / "item_stats"))
    write_table(user_stats.transform(events_df), str(root / "user_stats"))
    sims = target_similarity.transform(tables["sequences"], emb, "e")
    write_table(sims, str(root / "target_similarity"))
    return tables


def copy_repo(dest: Path) -> Path:
    """A user's own repo, as ``mmfs init`` writes it: its state in its own data/ folder."""
    return init_repo(dest / "feature_repo")


@pytest.fixture(scope="session")
def tiny_root(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    tables = write_tables(spark, root)
    return root, tables


@pytest.fixture(scope="session")
def applied_repo(tiny_root, tmp_path_factory):
    """A repo written by mmfs init, applied over the tiny tables with the default config."""
    from mmfs.store import feast_store

    root, _ = tiny_root
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    feast_store.apply("duckdb", repo, root)
    return repo, root

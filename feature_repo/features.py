"""mmfs feature definitions: entities, sources, feature views, feature services.

Tables come from the Spark jobs under ``MMFS_TABLE_ROOT`` (default ``<repo>/out/movielens``).
``MMFS_OFFLINE_STORE=spark`` declares the same tables as SparkSources for Feast's Spark offline
store; the default declares file sources read by the DuckDB offline store.
"""
import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Bool, Float32, Int32, Int64

TABLE_ROOT = os.environ.get("MMFS_TABLE_ROOT", str(Path(__file__).resolve().parents[1] / "out" / "movielens"))
OFFLINE_STORE = os.environ.get("MMFS_OFFLINE_STORE", "duckdb")
MM_DIM = int(os.environ.get("MMFS_MM_DIM", "64"))


def table_source(name: str, table: str, created_timestamp_column: str = ""):
    """One pipeline output table as a Feast source for the configured offline store."""
    if OFFLINE_STORE == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=name, path=f"{TABLE_ROOT}/{table}", file_format="parquet",
                           timestamp_field="event_timestamp", created_timestamp_column=created_timestamp_column)
    return FileSource(name=name, path=f"{TABLE_ROOT}/{table}/*.parquet",
                      timestamp_field="event_timestamp", created_timestamp_column=created_timestamp_column)


# -- entities ----------------------------------------------------------------------------------
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="A user of the ranking surface")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64, description="A rankable item")

# -- sources -----------------------------------------------------------------------------------
item_embeddings_source = table_source("item_embeddings_source", "item_embeddings", "created_timestamp")
user_sequence_source = table_source("user_sequence_source", "user_sequence_snapshots")

# -- feature views -----------------------------------------------------------------------------
item_embeddings_fv = FeatureView(
    name="item_embeddings",
    entities=[item],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="mm_emb", dtype=Array(Float32), description=f"{MM_DIM}-d fused multimodal embedding: L2-normalised PCA(text) + PCA(image), MMCTR V4"),
        Field(name="text_emb", dtype=Array(Float32), description="384-d MiniLM-L6 BERT mean-pooled sentence embedding of title + text"),
        Field(name="image_emb", dtype=Array(Float32), description="Image embedding (1280-d EfficientNet-Lite0 or CLIP); empty without a usable image"),
        Field(name="has_image", dtype=Bool, description="Whether image_emb holds a real image embedding"),
    ],
    source=item_embeddings_source,
    online=True,
    tags={"team": "ranking", "producer": "pipelines/encode_items.py"},
)

user_sequence_fv = FeatureView(
    name="user_sequence",
    entities=[user],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="hist_item_ids", dtype=Array(Int64), description="The user's last N positive items strictly before the row time, oldest first"),
        Field(name="hist_len", dtype=Int32, description="Number of items in hist_item_ids"),
    ],
    source=user_sequence_source,
    online=True,
    tags={"team": "ranking", "producer": "pipelines/user_sequences.py"},
)

# -- feature services: the train/serve contract, one versioned service per model family --------
ctr_dmf_v1 = FeatureService(name="ctr_dmf_v1", features=[user_sequence_fv, item_embeddings_fv[["mm_emb", "has_image"]]])
ctr_din_v1 = FeatureService(name="ctr_din_v1", features=[user_sequence_fv])
ctr_mmctr_din_v1 = FeatureService(name="ctr_mmctr_din_v1", features=[user_sequence_fv, item_embeddings_fv])
ctr_diffmsin_v1 = FeatureService(name="ctr_diffmsin_v1", features=[user_sequence_fv, item_embeddings_fv])

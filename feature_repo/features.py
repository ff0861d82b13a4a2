"""mmfs feature definitions: entities, sources, feature views, feature services.

Static declarations, as in Feast's templates. Two inputs, both files or paths the user owns:

- the table root the Spark jobs wrote: ``MMFS_TABLE_ROOT`` (required; mmfs sets it);
- ``encoders.yaml``, written by ``mmfs apply`` from the embedding tables' metadata (beside this
  file in a user's own copy of the repo, else ``<table root>/encoders.yaml``): one embedding view
  per entry, ``v1`` as ``item_embeddings`` and a backfill's ``v2`` as ``item_embeddings_v2`` with
  its own similarity view and ``ctr_dmf_v2`` service, beside v1's.

The source type follows the offline store of the yaml in use (``feast -f feature_store.spark.yaml``
declares SparkSources for Feast's Spark offline store; otherwise parquet FileSources read by the
DuckDB offline store): Feast's CLI passes its ``-f`` file in its click context.

Request-time features: the target-aware similarities s_j = cos(m_t, m_j) need the embeddings of
every history item j, a lookup an OnDemandFeatureView cannot make (it sees one row's features). So
they are not an ODFV: offline, the Spark job ``target_similarity`` writes them for training rows
(``target_similarity_fv``); online, the scorer computes them from ``item_embeddings_fv`` with the
same function (``mmfs.core.features.similarity.target_similarity``).
"""
import os
from datetime import timedelta
from pathlib import Path

import yaml
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Bool, Float32, Int32, Int64

TABLE_ROOT = os.environ.get("MMFS_TABLE_ROOT", "")
if not TABLE_ROOT:  # a default would declare some other tables, silently
    raise RuntimeError("features.py declares the tables of one table root: set MMFS_TABLE_ROOT to the root the Spark jobs "
                       "wrote (mmfs sets it for you; by hand: export MMFS_TABLE_ROOT=<root> MMFS_FEAST_STATE=<root>/_feast, "
                       "or <this repo>/data for a repo of your own)")
TTL = timedelta(days=3650)  # sequences and similarities age out after ten years; stats and embeddings never
DEFAULT_ENCODER = {"version": "v1", "table": "item_embeddings", "encoder_id": "", "mm_dim": 64, "text_dim": 384, "image_dim": 1280}


def _encoders() -> list[dict]:
    """The entries of encoders.yaml (beside this file, else under the table root); v1 with the
    default lengths before ``mmfs apply`` has written one."""
    for path in (Path(__file__).resolve().parent / "encoders.yaml", Path(TABLE_ROOT) / "encoders.yaml"):
        if path.is_file():
            return yaml.safe_load(path.read_text())["encoders"]
    return [DEFAULT_ENCODER]


def _offline_store_type() -> str:
    """The offline store of the yaml in use: the feast CLI's -f file (default: duckdb)."""
    try:
        import click

        ctx = click.get_current_context(silent=True)
        obj = ctx.find_root().obj if ctx is not None else None
        yaml_path = str(obj["FS_YAML_FILE"]) if obj and obj.get("FS_YAML_FILE") else None
    except ImportError:
        yaml_path = None
    if yaml_path and Path(yaml_path).is_file():
        return (yaml.safe_load(Path(yaml_path).read_text()).get("offline_store") or {}).get("type", "duckdb")
    return "duckdb"


OFFLINE_STORE = _offline_store_type()
ENCODERS = _encoders()


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

# -- sources: one per pipeline output table ------------------------------------------------------
item_stats_source = table_source("item_stats_source", "item_stats")
user_stats_source = table_source("user_stats_source", "user_stats")
user_sequence_source = table_source("user_sequence_source", "user_sequence_snapshots")

# -- feature views -----------------------------------------------------------------------------
def item_embeddings_view(name: str, source, mm_dim: int, text_dim: int, image_dim: int, encoder_id: str) -> FeatureView:
    """One encoder's versioned embedding table as a view (v1 below; a backfill adds v2 beside it)."""
    return FeatureView(
        name=name,
        entities=[item],
        # No expiry: an item's content embedding stays valid until a new version replaces it. (Stats
        # and sequences do age out.) The similarity job and the loader look versions up the same way.
        ttl=timedelta(0),
        schema=[
            Field(name="mm_emb", dtype=Array(Float32), tags={"dim": str(mm_dim)},
                  description=f"{mm_dim}-d fused multimodal embedding: L2-normalised PCA(text) + PCA(image), MMCTR V4"),
            Field(name="text_emb", dtype=Array(Float32), tags={"dim": str(text_dim)},
                  description=f"{text_dim}-d BERT-family mean-pooled sentence embedding of title + text"),
            Field(name="image_emb", dtype=Array(Float32), tags={"dim": str(image_dim), "empty_allowed": "true"},
                  description=f"{image_dim}-d image embedding (EfficientNet-Lite0 or CLIP); empty without a usable image"),
            Field(name="has_image", dtype=Bool, description="Whether image_emb holds a real image embedding"),
        ],
        source=source,
        online=True,
        tags={"team": "ranking", "producer": "pipelines/jobs/encode_items.py", "encoder_id": encoder_id},
    )


def target_similarity_view(name: str, source, encoder_id: str) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[user, item],
        ttl=TTL,
        schema=[
            Field(name="hist_sim", dtype=Array(Float32), tags={"request_time": "true"},
                  description="cos(mm_emb(target), mm_emb(hist_j)) per history item as of the row time; null where unknown"),
            Field(name="target_has_emb", dtype=Bool, tags={"request_time": "true"},
                  description="Whether the target item had an embedding at the row time"),
        ],
        source=source,
        online=False,  # online, the scorer computes these at request time with the same function
        tags={"team": "ranking", "producer": "pipelines/jobs/target_similarity.py", "encoder_id": encoder_id},
    )



# Running counters: the newest row holds the whole past, however old it is, so the stats views
# never expire (a TTL nulled the counts of items with no event for ten years: docs/models.md).
item_stats_fv = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="impressions", dtype=Int64, description="Events on the item strictly before the row time (popularity)"),
        Field(name="clicks", dtype=Int64, description="Positive events on the item strictly before the row time"),
        Field(name="ctr", dtype=Float32, description="Smoothed click-through rate strictly before the row time"),
    ],
    source=item_stats_source,
    online=True,
    tags={"team": "ranking", "producer": "pipelines/jobs/item_stats.py"},
)

user_stats_fv = FeatureView(
    name="user_stats",
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name="user_impressions", dtype=Int64, description="The user's events strictly before the row time"),
        Field(name="user_clicks", dtype=Int64, description="The user's positive events strictly before the row time"),
        Field(name="user_ctr", dtype=Float32, description="The user's smoothed click-through rate strictly before the row time"),
    ],
    source=user_stats_source,
    online=True,
    tags={"team": "ranking", "producer": "pipelines/jobs/user_stats.py"},
)

user_sequence_fv = FeatureView(
    name="user_sequence",
    entities=[user],
    ttl=TTL,
    schema=[
        Field(name="hist_item_ids", dtype=Array(Int64), description="The user's last N positive items strictly before the row time, oldest first"),
        Field(name="hist_ts_us", dtype=Array(Int64), description="Event times of hist_item_ids, epoch microseconds UTC"),
        Field(name="hist_len", dtype=Int32, description="Number of items in hist_item_ids"),
    ],
    source=user_sequence_source,
    online=True,
    tags={"team": "ranking", "producer": "pipelines/jobs/user_sequences.py"},
)

# One embedding view and one similarity view per encoders.yaml entry: v1 as item_embeddings and
# target_similarity, a backfill's (``mmfs encode-items --table item_embeddings_v2`` then
# ``mmfs target-similarity --version v2``) beside them, while v1's stay as deployed.
embedding_views: dict[str, FeatureView] = {}
similarity_views: dict[str, FeatureView] = {}
for _e in ENCODERS:
    _suffix = "" if _e["version"] == "v1" else f"_{_e['version']}"
    embedding_views[_e["version"]] = item_embeddings_view(
        f"item_embeddings{_suffix}", table_source(f"item_embeddings{_suffix}_source", _e["table"], "created_timestamp"),
        int(_e["mm_dim"]), int(_e["text_dim"]), int(_e["image_dim"]), str(_e["encoder_id"]))
    similarity_views[_e["version"]] = target_similarity_view(
        f"target_similarity{_suffix}", table_source(f"target_similarity{_suffix}_source", f"target_similarity{_suffix}"),
        str(_e["encoder_id"]))
    globals()[f"item_embeddings{_suffix}_fv"] = embedding_views[_e["version"]]  # Feast collects module-level objects
    globals()[f"target_similarity{_suffix}_fv"] = similarity_views[_e["version"]]
item_embeddings_fv = embedding_views["v1"]
target_similarity_fv = similarity_views["v1"]

# -- feature services: the train/serve contract, one versioned service per model family --------
ctr_dmf_v1 = FeatureService(
    name="ctr_dmf_v1",
    features=[user_sequence_fv, user_stats_fv, item_stats_fv, target_similarity_fv, item_embeddings_fv[["mm_emb", "has_image"]]],
    description="DMF: ID sequence + target-aware similarities + fused multimodal embeddings",
)
ctr_din_v1 = FeatureService(
    name="ctr_din_v1", features=[user_sequence_fv, user_stats_fv, item_stats_fv], description="DIN: ID features only",
)
ctr_mmctr_din_v1 = FeatureService(
    name="ctr_mmctr_din_v1",
    features=[user_sequence_fv, user_stats_fv, item_stats_fv, item_embeddings_fv[["mm_emb", "has_image"]]],
    description="MMCTR DIN: multi-head target attention + SENet over PCA(BERT)+PCA(image) item vectors",
)
ctr_diffmsin_v1 = FeatureService(
    name="ctr_diffmsin_v1",
    features=[user_sequence_fv, user_stats_fv, item_stats_fv, item_embeddings_fv],
    description="Diff-MSIN: per-modality text and image embeddings",
)
for _version in [v for v in embedding_views if v != "v1"]:
    globals()[f"ctr_dmf_{_version}"] = FeatureService(
        name=f"ctr_dmf_{_version}",
        features=[user_sequence_fv, user_stats_fv, item_stats_fv, similarity_views[_version],
                  embedding_views[_version][["mm_emb", "has_image"]]],
        description=f"DMF on the backfilled encoder (item_embeddings_{_version}, target_similarity_{_version}), beside ctr_dmf_v1",
    )

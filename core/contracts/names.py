"""Names the layers agree on: the feature views the Feast repo declares, and the state folders
under a table root. (Each model names its own feature service: ``mmfs.model.models``.)"""

ITEM_EMBEDDINGS_VIEW = "item_embeddings"  # a backfill's views are named item_embeddings_<version>
TARGET_SIMILARITY_VIEW = "target_similarity"
ITEM_STATS_VIEW = "item_stats"
USER_STATS_VIEW = "user_stats"
USER_SEQUENCE_VIEW = "user_sequence"


def embedding_view(view_names) -> str | None:
    """The item embedding view among a service's views: item_embeddings, or a backfill's item_embeddings_v2."""
    return next((name for name in view_names if name.startswith(ITEM_EMBEDDINGS_VIEW)), None)


ENCODERS_FILE = "encoders.yaml"  # under the table root: the embedding tables' encoders, written by mmfs apply
FEAST_STATE_SUBDIR = "_feast"  # under the table root: the registry and the SQLite online store
REPO_RECORD_FILE = "_feast/repo.json"  # under the table root: the Feast repo `mmfs apply` used for it
LANDING_SUBDIR = "_landing/events"  # under the table root: the event log POST /events appends to, mmfs stream reads
STREAM_SUBDIR = "_stream"  # under the table root: mmfs stream's checkpoint, its batch log and its report
INCREMENT_LOG_SUBDIR = "_stream/log"  # committed micro-batches not yet applied (durable before visible)
CHANGED_ITEMS_FILE = "_stream/changed_items.jsonl"  # one line per applied micro-batch: the items whose rows changed
REQUEST_LOG_SUBDIR = "_served"  # under the table root by default: the scorer's served-feature log (parquet)
META_FILE = "_mmfs_meta.json"  # in each table folder: the job's parameters and the encoder identity

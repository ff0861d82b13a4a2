"""Names the layers agree on: the feature views and services the Feast repo declares, and the
state folders under a table root."""

ITEM_EMBEDDINGS_VIEW = "item_embeddings"  # a backfill's views are named item_embeddings_<version>
TARGET_SIMILARITY_VIEW = "target_similarity"
ITEM_STATS_VIEW = "item_stats"
USER_STATS_VIEW = "user_stats"
USER_SEQUENCE_VIEW = "user_sequence"

SERVICES = ("ctr_dmf_v1", "ctr_din_v1", "ctr_mmctr_din_v1", "ctr_diffmsin_v1")

ENCODERS_FILE = "encoders.yaml"  # under the table root: the embedding tables' encoders, written by mmfs apply
FEAST_STATE_SUBDIR = "_feast"  # under the table root: the registry and the SQLite online store
FEEDBACK_LOG_SUBDIR = "_feedback_log"  # under the table root: committed feedback batches not yet applied
META_FILE = "_mmfs_meta.json"  # in each table folder: the job's parameters and the encoder identity

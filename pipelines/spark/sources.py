"""The raw-input adapters ``mmfs ingest`` reads with: each returns (raw items, raw events) with the
raw contract's columns (``mmfs.core.contracts.tables.RAW_ITEM_COLUMNS`` / ``RAW_EVENT_COLUMNS``,
../shared/DESIGN.md section 1); ingest then parses, validates and quarantines them."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mmfs.core.contracts.tables import RAW_EVENT_COLUMNS, RAW_ITEM_COLUMNS


def read_movielens(spark: SparkSession, input_dir: str) -> tuple[DataFrame, DataFrame]:
    """MovieLens ml-latest-small: text = genres, label = rating >= 4, no images.

    MovieLens has no item timestamps: an item's ``updated_at`` is the first time it was rated
    or tagged (items never seen get the newest timestamp in the data).
    """
    csv = spark.read.option("header", True).option("quote", '"').option("escape", '"')
    movies = csv.csv(f"{input_dir}/movies.csv")
    ratings = csv.csv(f"{input_dir}/ratings.csv")
    tags = csv.csv(f"{input_dir}/tags.csv")
    seen = ratings.select("movieId", "timestamp").unionByName(tags.select("movieId", "timestamp"))
    first_seen = seen.groupBy("movieId").agg(F.min(F.col("timestamp").cast("long")).alias("first_seen"))
    newest = seen.agg(F.max(F.col("timestamp").cast("long"))).first()[0]
    genres = F.when(F.col("genres") == "(no genres listed)", F.lit("")).otherwise(
        F.concat(F.lit("Genres: "), F.regexp_replace("genres", r"\|", ", "))
    )
    items = movies.join(first_seen, on="movieId", how="left").select(
        F.col("movieId").alias("item_id"),
        F.col("title"),
        genres.alias("text"),
        F.lit(None).cast("string").alias("image_uri"),
        F.timestamp_seconds(F.coalesce(F.col("first_seen"), F.lit(newest))).alias("updated_at"),
    )
    events = ratings.select(
        F.col("userId").alias("user_id"),
        F.col("movieId").alias("item_id"),
        F.timestamp_seconds(F.col("timestamp").cast("long")).alias("event_timestamp"),
        F.when(F.col("rating").cast("double") >= 4.0, F.lit(1)).otherwise(F.lit(0)).alias("label"),
    )
    return items, events


def read_table_file(spark: SparkSession, path: str, required: list[str], what: str) -> DataFrame:
    """A CSV (header row) or parquet file or folder, refused with its missing columns named."""
    if path.endswith(".csv") or path.endswith(".csv.gz"):
        df = spark.read.option("header", True).option("quote", '"').option("escape", '"').csv(path)
    else:
        df = spark.read.parquet(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SystemExit(f"{what} file {path} lacks required column(s) {missing}; it has {df.columns}")
    return df


def read_files(spark: SparkSession, items_path: str, events_path: str) -> tuple[DataFrame, DataFrame]:
    """Your own items/events in CSV or parquet with the raw contract's columns.

    Items may carry ``created_at`` (when the version became known); it defaults to ``updated_at``.
    """
    items = read_table_file(spark, items_path, RAW_ITEM_COLUMNS, "items")
    events = read_table_file(spark, events_path, RAW_EVENT_COLUMNS, "events")
    keep_items = RAW_ITEM_COLUMNS + (["created_at"] if "created_at" in items.columns else [])
    return items.select(*keep_items), events.select(*RAW_EVENT_COLUMNS)

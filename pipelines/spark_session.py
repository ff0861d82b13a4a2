"""The one SparkSession builder shared by every job and by the tests."""
from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

# Settings every mmfs session needs, whatever the master: UTC everywhere (timestamps in the
# tables are UTC instants) and Arrow for pandas transfer (mapInPandas, toPandas).
BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
}

# Laptop defaults: only applied when the master is local and the user did not set them.
LOCAL_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "4g",
}


def build_spark(
    app_name: str = "mmfs",
    master: str | None = None,
    conf: dict[str, str] | None = None,
) -> SparkSession:
    """Return a SparkSession for an mmfs job.

    ``master`` wins over ``spark.master`` from spark-submit or spark-defaults; with neither,
    the session runs ``local[*]``. Local sessions bind to loopback only.
    """
    builder = SparkSession.builder.appName(app_name)
    # Under spark-submit the driver talks to an already started JVM whose master and conf
    # come from the spark-submit command line; leave them alone unless --master was given.
    under_spark_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if master:
        builder = builder.master(master)
    elif not under_spark_submit:
        master = "local[*]"
        builder = builder.master(master)
    if master and master.startswith("local"):
        # Without this Spark binds a non-loopback address on this machine kind.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Workers must run the driver's interpreter (the venv with torch, pandas, the encoders).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        for key, value in LOCAL_CONF.items():
            builder = builder.config(key, value)
    for key, value in {**BASE_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("MMFS_SPARK_LOG_LEVEL", "WARN"))
    return spark


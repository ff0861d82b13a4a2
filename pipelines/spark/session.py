"""The one SparkSession builder shared by every job and by the tests."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

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
    quiet_known_noise(spark)
    return spark


# Warnings every run printed that say nothing to act on: a job that persists a frame Spark already
# cached, `mmfs pipeline` reusing its one session, and the JVM's missing native Hadoop library.
QUIET_LOGGERS = ("org.apache.spark.sql.execution.CacheManager", "org.apache.spark.sql.SparkSession",
                 "org.apache.spark.sql.classic.SparkSession", "org.apache.hadoop.util.NativeCodeLoader")


def quiet_known_noise(spark: SparkSession) -> None:
    """Set the ``QUIET_LOGGERS`` to ERROR in the driver JVM; a no-op when ``MMFS_SPARK_LOG_LEVEL`` is set or log4j 2 is absent."""
    if os.environ.get("MMFS_SPARK_LOG_LEVEL"):
        return  # the user asked for a level: leave every logger at it
    try:
        jvm = spark.sparkContext._jvm  # noqa: SLF001 - log4j lives in the driver JVM
        level = jvm.org.apache.logging.log4j.Level.ERROR
        for name in QUIET_LOGGERS:
            jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, level)
    except Exception:  # noqa: BLE001 - a JVM without log4j 2 (spark-submit with its own logging): keep its output
        pass



@contextlib.contextmanager
def task_progress(spark: SparkSession, label: str, every_s: float = 10.0):
    """Log the running stages' finished/total tasks every ``every_s`` seconds while the block runs:
    a job that works for minutes (encoding) says how far it is."""
    log = logging.getLogger("mmfs.progress")
    done = threading.Event()
    tracker = spark.sparkContext.statusTracker()
    began = time.perf_counter()

    def report():
        while not done.wait(every_s):
            stages = [tracker.getStageInfo(i) for i in tracker.getActiveStageIds()]
            stages = [s for s in stages if s is not None]
            if stages:
                finished = sum(s.numCompletedTasks for s in stages)
                total = sum(s.numTasks for s in stages)
                log.info("%s: %d/%d tasks done, %.0f s", label, finished, total, time.perf_counter() - began)

    thread = threading.Thread(target=report, name="mmfs-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1)

"""The one session builder: long work reports progress, known noise stays quiet."""
import logging
import time

from mmfs.pipelines.spark.session import QUIET_LOGGERS, quiet_known_noise, task_progress


def test_long_jobs_report_task_progress(spark, caplog):
    def slow(batches):
        for batch in batches:
            time.sleep(0.4)
            yield batch

    df = spark.range(0, 8, numPartitions=4).mapInPandas(slow, "id long")
    with caplog.at_level(logging.INFO, logger="mmfs.progress"), task_progress(spark, "slow job", every_s=0.2):
        assert df.count() == 8
    lines = [r.getMessage() for r in caplog.records if r.name == "mmfs.progress"]
    assert lines and all(line.startswith("slow job: ") and "tasks done" in line for line in lines)


def test_known_noise_is_quieted(spark):
    quiet_known_noise(spark)
    jvm = spark.sparkContext._jvm
    for name in QUIET_LOGGERS:
        assert str(jvm.org.apache.logging.log4j.LogManager.getLogger(name).getLevel()) == "ERROR", name

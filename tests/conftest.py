import os
import time

import pytest

# PySpark converts naive datetimes with the process time zone: pin it to UTC, like the tables.
os.environ["TZ"] = "UTC"
time.tzset()

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def spark():
    from mmfs.pipelines.spark.session import build_spark

    session = build_spark(
        "mmfs-tests",
        master="local[2]",
        conf={"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"},
    )
    yield session
    session.stop()


# Feast fixtures (a tiny adversarial table root and a repo applied over it), shared across packages.
from tests.support.feast_tables import applied_repo, tiny_root  # noqa: E402,F401

"""Jobs run under spark-submit too, not only through the mmfs CLI."""
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_user_sequences_under_spark_submit(tmp_path):
    events = tmp_path / "root" / "events"
    events.mkdir(parents=True)
    micros = pa.array([0, 10, 20, 20], pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"user_id": pa.array([1, 1, 1, 1], pa.int64()), "item_id": pa.array([5, 6, 7, 8], pa.int64()),
                             "event_timestamp": micros, "label": pa.array([1, 1, 1, 0], pa.int32())}), events / "part-0.parquet")
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    done = subprocess.run(
        [str(spark_submit), "--master", "local[1]", "--conf", "spark.ui.enabled=false",
         str(REPO / "pipelines" / "user_sequences.py"), "--root", str(tmp_path / "root"), "--max-len", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = duckdb.connect().execute(
        f"select item_id, hist_item_ids from '{tmp_path}/root/sequences/*.parquet' order by item_id").fetchall()
    assert rows == [(5, []), (6, [5]), (7, [5, 6]), (8, [5, 6])]

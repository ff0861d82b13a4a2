"""Jobs run under spark-submit too, not only through the mmfs CLI."""
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[3]


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
         str(REPO / "pipelines" / "jobs" / "user_sequences.py"), "--root", str(tmp_path / "root"), "--max-len", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = duckdb.connect().execute(
        f"select item_id, hist_item_ids from '{tmp_path}/root/sequences/*.parquet' order by item_id").fetchall()
    assert rows == [(5, []), (6, [5]), (7, [5, 6]), (8, [5, 6])]


def _write_embeddings(root, vectors: dict[int, list[float]]) -> None:
    """A tiny item_embeddings table as encode_items writes it (parquet + its metadata file)."""
    import json

    table = root / "item_embeddings"
    table.mkdir(parents=True)
    stamp = pa.array([0] * len(vectors), pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({
        "item_id": pa.array(list(vectors), pa.int64()),
        "text_emb": pa.array([[1.0]] * len(vectors), pa.list_(pa.float32())),
        "image_emb": pa.array([None] * len(vectors), pa.list_(pa.float32())),
        "mm_emb": pa.array(list(vectors.values()), pa.list_(pa.float32())),
        "has_image": pa.array([False] * len(vectors)),
        "encoder_id": pa.array(["e1"] * len(vectors)),
        "event_timestamp": stamp,
        "created_timestamp": stamp,
    }), table / "part-0.parquet")
    (table / "_mmfs_meta.json").write_text(json.dumps({"job": "test", "encoder_identity": {"encoder_id": "e1"}}))


@pytest.mark.integration
def test_a_job_runs_on_a_standalone_cluster(tmp_path):
    """spark-submit --master spark://... against a real master + worker on loopback; the job's Python
    code (target_similarity's mapInArrow) runs in the worker's executor, not in the driver."""
    from tests.support.spark_cluster import spark_cluster

    root = tmp_path / "root"
    (root / "sequences").mkdir(parents=True)
    micros = pa.array([10, 20, 30, 40], pa.timestamp("us", tz="UTC"))
    ids = pa.list_(pa.int64())
    pq.write_table(pa.table({
        "user_id": pa.array([1, 1, 1, 2], pa.int64()), "item_id": pa.array([5, 6, 7, 5], pa.int64()),
        "event_timestamp": micros, "label": pa.array([1, 1, 1, 1], pa.int32()),
        "hist_item_ids": pa.array([[], [5], [5, 6], []], ids),
        "hist_timestamps": pa.array([[], [10], [10, 20], []], pa.list_(pa.timestamp("us", tz="UTC"))),
        "hist_len": pa.array([0, 1, 2, 0], pa.int32()),
    }), root / "sequences" / "part-0.parquet")
    _write_embeddings(root, {5: [1.0, 0.0], 6: [0.0, 1.0], 7: [1.0, 0.0]})
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    with spark_cluster(tmp_path / "cluster", cores=1, memory="1g") as cluster:
        done = subprocess.run(
            [str(spark_submit), "--master", cluster.master_url, "--conf", "spark.ui.enabled=false",
             "--conf", "spark.driver.host=127.0.0.1", "--conf", f"spark.pyspark.python={sys.executable}",
             "--conf", "spark.executor.memory=512m", "--conf", "spark.sql.shuffle.partitions=2",
             str(REPO / "pipelines" / "jobs" / "target_similarity.py"), "--root", str(root)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        state = cluster.state()
    assert [a["name"] for a in state["completedapps"]] == ["mmfs-target-similarity"]
    executor_logs = list(cluster.work_dir.glob("app-*/*/stderr"))
    assert len(executor_logs) == 1  # the executor ran in the worker
    rows = duckdb.connect().execute(
        f"select user_id, item_id, hist_sim from '{root}/target_similarity/*.parquet' order by user_id, item_id").fetchall()
    assert rows == [(1, 5, []), (1, 6, [0.0]), (1, 7, [1.0, 0.0]), (2, 5, [])]

"""The Spark materialiser writes exactly what `feast materialize` writes, partition by partition."""
import datetime as dt

import pytest

from mmfs.store import feast_store
from tests.support.feast_tables import copy_repo
from tests.support.redis_server import redis_server

AFTER_ALL = dt.datetime(2020, 8, 1, tzinfo=dt.timezone.utc)
MIDDLE = dt.datetime(2020, 2, 15, tzinfo=dt.timezone.utc)
KEYS = {"user_sequence": "user_id", "user_stats": "user_id", "item_embeddings": "item_id", "item_stats": "item_id"}


def online_contents(store) -> dict:
    """Every online view's stored (timestamp, serialized values) for ids 0..99, straight from the store."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    contents = {}
    for view_name, key in KEYS.items():
        view = store.get_feature_view(view_name)
        keys = [EntityKey(join_keys=[key], entity_values=[Value(int64_val=i)]) for i in range(100)]
        rows = store._get_provider().online_read(config=store.config, table=view, entity_keys=keys)
        contents[view_name] = [(ts, {k: v.SerializeToString() for k, v in sorted((values or {}).items())}) for ts, values in rows]
    return contents


def stores(tmp_path, root, config, ports=None):
    made = []
    for engine in ("feast", "spark"):
        repo = copy_repo(tmp_path / engine)
        if ports is not None:
            path = repo / "feature_store.redis.yaml"
            path.write_text(path.read_text().replace("127.0.0.1:6379", f"127.0.0.1:{ports[engine]}"))
        feast_store.apply(config, repo, root)
        made.append((engine, repo))
    return made


def check_same_as_feast(tmp_path, root, config, ports=None):
    made = stores(tmp_path, root, config, ports)
    seen = {}
    for end in (MIDDLE, AFTER_ALL):  # a first run from the earliest row, then an incremental one
        for engine, repo in made:
            result = feast_store.materialize(config, repo, root, end=end, engine=engine)
            if engine == "spark":
                assert {r["view"] for r in result["runs"]} == set(KEYS)
            seen[engine] = online_contents(feast_store.open_store(config, repo, root))
        assert seen["spark"] == seen["feast"], f"online stores differ after materialising to {end}"
        present = sum(1 for rows in seen["spark"].values() for ts, values in rows if values)
        assert present >= (5 if end == MIDDLE else 10)
    spark_store = feast_store.open_store(config, made[1][1], root)
    view = spark_store.get_feature_view("user_sequence")
    assert view.most_recent_end_time.astimezone(dt.timezone.utc) == AFTER_ALL  # recorded like feast records it


@pytest.mark.slow  # make test-all, with the Redis variant below
def test_spark_engine_writes_what_feast_writes_sqlite(tiny_root, tmp_path):
    root, _ = tiny_root
    check_same_as_feast(tmp_path, root, "duckdb")


@pytest.mark.integration
@pytest.mark.slow  # two feast applies + four materialisations (~1.5 min): make test-all; CI keeps its 20-minute budget
def test_spark_engine_writes_what_feast_writes_redis(tiny_root, tmp_path):
    root, _ = tiny_root
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with redis_server(tmp_path / "a") as feast_port, redis_server(tmp_path / "b") as spark_port:
        check_same_as_feast(tmp_path, root, "redis", {"feast": feast_port, "spark": spark_port})

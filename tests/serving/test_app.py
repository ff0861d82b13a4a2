"""The HTTP layer under bad input and a failing store: client mistakes are 4xx and never touch
readiness; only the store makes it unready, and readiness comes back on its own (real SQLite
files); the event loop never waits on scoring; overload is shed."""
import datetime as dt
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mmfs.store import feast_store
from mmfs.serving.app import ServeSettings, create_app
from tests.support.feast_tables import copy_repo
from tests.serving.test_scorer import START, served, wait_until  # noqa: F401 - the module's fixture

AT = (START + dt.timedelta(days=31)).isoformat()


@pytest.fixture()
def own_store(served, tmp_path):  # noqa: F811
    """A repo of its own, applied and materialised, whose SQLite file a test may break."""
    repo = copy_repo(tmp_path)
    feast_store.apply("duckdb", repo, served["root"])
    feast_store.open_store("duckdb", repo, served["root"]).materialize(start_date=START - dt.timedelta(days=60),
                                                                        end_date=START + dt.timedelta(days=31))
    store = feast_store.open_store("duckdb", repo, served["root"])
    db = Path(store.config.online_store.path)
    db = db if db.is_absolute() else repo / db
    assert db.is_file()
    return repo, db


def settings_for(served, repo, **kw):  # noqa: F811
    return ServeSettings(checkpoint=str(served["checkpoint"]), root=str(served["root"]), repo=str(repo), probe_interval_s=0.2,
                         tune_process=False, **kw)


def test_bad_requests_are_4xx_and_never_make_the_server_unready(served, own_store):  # noqa: F811
    repo, _ = own_store
    with TestClient(create_app(settings_for(served, repo, max_body_bytes=4096), load_in_background=False)) as client:
        cases = [
            ({"user_id": 2 ** 63, "item_ids": [1]}, 422, "body.user_id"),
            ({"user_id": 1, "item_ids": [1, -(2 ** 63) - 1]}, 422, "body.item_ids.1"),
            ({"user_id": 1, "item_ids": [1], "at": "0001-01-01T00:00:00Z"}, 422, None),  # before any table's range
            ({"user_id": 1, "item_ids": [1], "at": "1900-01-01T00:00:00Z"}, 422, None),
            ({"user_id": 1, "item_ids": [1], "at": "2020-01-01T00:00:00Z"}, 422, None),  # before the first materialised interval
            ({"user_id": 1, "item_ids": [1], "at": 1_600_000_000}, 422, "body.at"),  # a bare number is not a time
            ({"user_id": 1, "item_ids": [1], "at": "2100-01-01T00:00:00Z"}, 422, None),  # the future
        ]
        for body, status, field in cases:
            response = client.post("/score", json=body)
            assert response.status_code == status, (body, response.text)
            if field:
                assert response.json()["detail"][0]["field"] == field
            assert client.get("/ready").status_code == 200, body
        assert "before the online store's first materialised interval" in client.post("/score", json=cases[4][0]).json()["detail"]
        huge = client.post("/score", content=b'{"user_id": 1, "item_ids": [' + b"1, " * 3000 + b'1]}',
                           headers={"content-type": "application/json"})
        assert huge.status_code == 413 and "over the limit" in huge.json()["detail"]
        streamed = client.post("/score", content=iter([b'{"user_id": 1, "item_ids": [', b"1, " * 3000, b"1]}"]),
                               headers={"content-type": "application/json"})  # no content-length: counted as it arrives
        assert streamed.status_code == 413
        bad_event = client.post("/events", json={"events": [{"user_id": 2 ** 64, "item_id": 1, "label": 1, "event_timestamp": AT}]})
        assert bad_event.status_code == 422 and client.get("/ready").status_code == 200
        future = client.post("/events", json={"events": [{"user_id": 1, "item_id": 1, "label": 1, "event_timestamp": "2300-01-01T00:00:00Z"}]})
        assert future.status_code == 422, future.text
        assert {(d["field"], d["rule"]) for d in future.json()["detail"]} == {("events.0.event_timestamp", "event_timestamp_in_range")}
        assert client.get("/ready").status_code == 200
        for event in ({"label": True}, {"label": 1.0}, {"label": 1, "event_timestamp": "0001-01-01T00:00:00+01:00"},
                      {"label": 1, "event_timestamp": "9999-12-31T23:59:59-01:00"}, {"label": 1, "extra": 1}):
            posted = client.post("/events", json={"events": [{"user_id": 1, "item_id": 1, "event_timestamp": AT, **event}]})
            assert posted.status_code == 422, (event, posted.text)  # the stream refuses these lines too
        assert client.get("/ready").status_code == 200
        assert client.post("/score", json={"user_id": 1, "item_ids": [1], "at": AT}).status_code == 200
        assert client.post("/score", json={"user_id": 1, "item_ids": [1, 2], "at": AT}).status_code == 200  # the same user side
        metrics = client.get("/metrics").text
        assert "mmfs_user_cache_hits 1.0" in metrics and "mmfs_user_cache_misses 1.0" in metrics
        assert 'mmfs_errors_total{endpoint="/score",kind="invalid_request"}' in metrics
        assert 'mmfs_errors_total{endpoint="/score",kind="body_too_large"} 2.0' in metrics
        docs = client.get("/docs")
        assert docs.status_code == 200 and "ScoreRequest" in docs.text and "<script" not in docs.text and "cdn" not in docs.text


def test_sqlite_replaced_missing_or_locked_recovers_on_its_own(served, own_store, tmp_path):  # noqa: F811
    repo, db = own_store
    good = tmp_path / "good.db"
    shutil.copy(db, good)
    body = {"user_id": 1, "item_ids": [1, 2], "at": AT}
    with TestClient(create_app(settings_for(served, repo), load_in_background=False)) as client:
        assert client.post("/score", json=body).status_code == 200
        # Locked: another process holds an exclusive lock for a while.
        locker = sqlite3.connect(db, timeout=0)
        locker.execute("PRAGMA locking_mode=EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        began = time.perf_counter()
        assert wait_until(lambda: client.get("/ready").status_code == 503, seconds=10)
        assert time.perf_counter() - began < 3  # a bounded wait on the lock (Python's default is 5 s), then 503
        assert client.post("/score", json=body).status_code == 503
        landed = client.post("/events", json={"events": [{"user_id": 1, "item_id": 1, "label": 1, "event_timestamp": AT}]})
        assert landed.status_code == 202, landed.text  # landing a file never touches the online store
        locker.rollback()
        locker.close()
        assert wait_until(lambda: client.get("/ready").status_code == 200, seconds=10)  # no traffic needed
        # Replaced under the server (a new file, a new inode): reopened, not "no such table" forever.
        os.remove(db)
        assert wait_until(lambda: client.get("/ready").status_code == 503, seconds=10)
        assert not db.exists()  # a missing file is reported, never created empty
        shutil.copy(good, db)
        assert wait_until(lambda: client.get("/ready").status_code == 200, seconds=10)
        assert client.post("/score", json=body).json()["history_len"] > 0
    os.remove(db)
    with TestClient(create_app(settings_for(served, repo), load_in_background=False)) as client:  # a restart without the file
        assert client.get("/ready").status_code == 503 and client.post("/score", json=body).status_code == 503
        assert not db.exists()


@pytest.mark.integration
def test_the_event_loop_never_waits_on_scoring_and_overload_is_shed(served, own_store):  # noqa: F811
    """A real uvicorn server; scoring made slow on purpose (2 s a request). /health must answer
    while the worker is busy, and requests past the queue bound get 503 with Retry-After."""
    import uvicorn

    from tests.support.redis_server import free_port

    repo, _ = own_store
    app = create_app(settings_for(served, repo, max_queue=2), load_in_background=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _status(f"{base}/ready") == 200, seconds=60)
        scorer = app.state.mmfs.scorer
        real = scorer.score

        def slow(*args, **kw):
            time.sleep(2.0)
            return real(*args, **kw)

        scorer.score = slow
        results = []
        clients = [threading.Thread(target=lambda: results.append(httpx.post(f"{base}/score", json={"user_id": 1, "item_ids": [1], "at": AT},
                                                                             timeout=30))) for _ in range(4)]
        for c in clients:
            c.start()
            time.sleep(0.05)
        began = time.perf_counter()
        health = httpx.get(f"{base}/health", timeout=5)
        health_s = time.perf_counter() - began
        for c in clients:
            c.join()
        assert health.status_code == 200 and health_s < 1.0, health_s  # the worker is busy for 2-4 s meanwhile
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 200, 503, 503], statuses  # queue bound 2: one running, one waiting, the rest shed
        shed = next(r for r in results if r.status_code == 503)
        assert shed.headers["retry-after"] == "1" and "overloaded" in shed.json()["detail"]
        scorer.score = real
        assert _status(f"{base}/ready") == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _status(url: str, body: dict | None = None) -> int:
    """GET ``url`` (POST ``body`` as JSON when given): its status, 0 when nothing answered."""
    try:
        return (httpx.post(url, json=body, timeout=10) if body is not None else httpx.get(url, timeout=2)).status_code
    except httpx.HTTPError:
        return 0


def test_an_injected_scorer_is_served_and_nothing_is_opened(served, monkeypatch):  # noqa: F811
    """create_app(settings, scorer=...) serves the caller's Scorer: the app opens no store and
    loads no checkpoint of its own (the settings name a checkpoint that does not exist)."""
    from mmfs.store import feast_store as fs
    from mmfs.serving.scorer import Scorer

    scorer = Scorer.from_checkpoint(served["checkpoint"], served["store"])
    monkeypatch.setattr(fs, "open_store", lambda *a, **k: (_ for _ in ()).throw(AssertionError("the app opened a store")))
    settings = ServeSettings(checkpoint="/nonexistent.pt", root=str(served["root"]), tune_process=False)
    with TestClient(create_app(settings, load_in_background=False, scorer=scorer)) as client:
        assert client.get("/ready").status_code == 200, client.get("/ready").text
        response = client.post("/score", json={"user_id": 1, "item_ids": [1, 2], "at": AT})
        assert response.status_code == 200 and len(response.json()["items"]) == 2
        assert client.app.state.mmfs.scorer is scorer


@pytest.mark.integration
def test_a_store_file_rewritten_in_place_is_a_503_and_a_recovery_never_a_crash(served, own_store):  # noqa: F811
    """`cp backup.db online_store.db` truncates the file in place and writes it again. A server that
    memory-mapped the file died of SIGBUS; it must answer 503 meanwhile and 200 again after."""
    from tests.support.serve_process import serving_process

    repo, db = own_store
    good = db.read_bytes()
    body = {"user_id": 1, "item_ids": [1, 2], "at": AT}
    with serving_process(served["checkpoint"], served["root"], repo) as (server, base):
        assert httpx.post(f"{base}/score", json=body, timeout=30).status_code == 200
        with open(db, "r+b") as f:  # in place: the inode every worker holds
            f.truncate(0)
        during = [_status(f"{base}/score", body) for _ in range(5)]
        assert server.poll() is None, f"the server died (exit {server.returncode})"
        assert set(during) <= {503}, during
        with open(db, "r+b") as f:
            f.write(good)
        assert wait_until(lambda: _status(f"{base}/score", body) == 200, seconds=20)
        assert server.poll() is None and _status(f"{base}/ready") == 200



def test_score_answers_items_or_arrays_with_the_same_values(served, own_store):  # noqa: F811
    """The arrays answer carries what the default one does, in request order; an unknown item's
    score is null in both; a format that is neither is a 422."""
    repo, _ = own_store
    with TestClient(create_app(settings_for(served, repo, request_log="off"), load_in_background=False)) as client:
        request = {"user_id": 1, "item_ids": [2, 21, 1], "at": AT}
        items = client.post("/score", json=request)
        arrays = client.post("/score", json={**request, "format": "arrays"})
        assert items.status_code == arrays.status_code == 200, (items.text, arrays.text)
        by_item, by_array = items.json(), arrays.json()
        assert by_array["item_ids"] == [i["item_id"] for i in by_item["items"]] == [2, 21, 1]
        assert by_array["scores"][1] is None and by_item["items"][1]["score"] is None and "unknown item" in by_array["item_errors"][1]
        assert by_array["scores"][0] == pytest.approx(by_item["items"][0]["score"]) and 0 < by_array["scores"][2] < 1
        assert by_array["item_flags"] == [i["flags"] for i in by_item["items"]]
        assert by_array["user_flags"] == by_item["user_flags"] and by_array["history_len"] == by_item["history_len"]
        wrong = client.post("/score", json={**request, "format": "columns"})
        assert wrong.status_code == 422 and wrong.json()["detail"][0]["field"] == "body.format"
        assert "ScoreArraysResponse" in client.get("/openapi.json").json()["components"]["schemas"]


def test_a_batch_answers_each_request_as_score_does_in_order(served, own_store):  # noqa: F811
    repo, _ = own_store
    with TestClient(create_app(settings_for(served, repo, request_log="off", max_candidates=3), load_in_background=False)) as client:
        requests = [{"user_id": 2, "item_ids": [3, 1], "at": AT}, {"user_id": 1, "item_ids": [21, 2, 1], "at": AT}]
        for fmt in ("items", "arrays"):
            batch = client.post("/score/batch", json={"requests": requests, "format": fmt})
            assert batch.status_code == 200, batch.text
            one_by_one = [client.post("/score", json={**r, "format": fmt}).json() for r in requests]
            strip = lambda a: {k: v for k, v in a.items() if k != "timings_ms"}  # noqa: E731
            assert [strip(a) for a in batch.json()["results"]] == [strip(a) for a in one_by_one]
        refused = client.post("/score/batch", json={"requests": [requests[0], {**requests[1], "at": "2020-01-01T00:00:00Z"}]})
        assert refused.status_code == 422 and refused.json()["detail"].startswith("requests[1]: ")
        too_many = client.post("/score/batch", json={"requests": [requests[0], {"user_id": 1, "item_ids": [1, 2, 3, 4]}]})
        assert too_many.status_code == 413 and too_many.json()["detail"].startswith("requests[1]: 4 candidates")
        empty = client.post("/score/batch", json={"requests": []})
        assert empty.status_code == 422 and empty.json()["detail"][0]["field"] == "body.requests"
        nested = client.post("/score/batch", json={"requests": [{"user_id": 1, "item_ids": ["x"]}]})
        assert nested.status_code == 422 and nested.json()["detail"][0]["field"] == "body.requests.0.item_ids.0"

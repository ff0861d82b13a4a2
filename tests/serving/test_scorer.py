"""The online scorer: train/serve skew, cold start, bad candidates, stale features, store checks, HTTP."""
import datetime as dt
import json
import math
import os

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
from pyspark.sql import Row

from mmfs.model.data import LoaderConfig, TrainingSetDataset
from mmfs.model.models import model_config
from mmfs.model.checkpoint import load_checkpoint
from mmfs.model.train import TrainConfig, prepare, train
from mmfs.store import feast_store, training_set
from mmfs.serving.contract import StoreMismatch, check_store
from mmfs.serving.scorer import BadRequest, Scorer, ScorerConfig
from mmfs.streaming import job as stream
from tests.support.feast_tables import copy_repo, write_tables

UTC = dt.timezone.utc
START = dt.datetime(2021, 1, 1, tzinfo=UTC)
N_USERS, N_ITEMS = 12, 20  # item 20 never gets an embedding; 21 is unknown to everything


def events():
    """~300 events over 30 days; users like items whose angle is near their own taste."""
    rng = np.random.default_rng(3)
    rows = []
    for n in range(300):
        user = int(rng.integers(1, N_USERS + 1))
        item = int(rng.integers(1, N_ITEMS + 1))
        at = START + dt.timedelta(minutes=int(rng.integers(0, 30 * 24 * 60)), seconds=n % 60)
        like = math.cos(math.radians(item * 18 - user * 30)) + rng.normal(0, 0.5) > 0
        rows.append((user, item, at.strftime("%Y-%m-%d %H:%M:%S"), int(like)))
    return rows


def embedding_rows():
    rows = []
    for item in range(1, N_ITEMS):
        a = math.radians(item * 18)
        rows.append(Row(item_id=item, text_emb=[1.0], image_emb=None, mm_emb=[math.cos(a), math.sin(a)], has_image=False,
                        encoder_id="enc-test", event_timestamp=dt.datetime(2020, 12, 1), created_timestamp=dt.datetime(2020, 12, 1)))
    # item 5 is re-encoded mid-way (known from its event time: no back-fill)
    rows.append(Row(item_id=5, text_emb=[1.0], image_emb=None, mm_emb=[0.0, -1.0], has_image=False, encoder_id="enc-test",
                    event_timestamp=dt.datetime(2021, 1, 15), created_timestamp=dt.datetime(2021, 1, 15)))
    return rows


@pytest.fixture(scope="module")
def served(spark, tmp_path_factory):
    """Tables, an applied repo, a training set and a small trained DMF."""
    root = tmp_path_factory.mktemp("serve_tables")
    write_tables(spark, root, events=events(), embeddings=embedding_rows())
    (root / "item_embeddings" / "_mmfs_meta.json").write_text('{"encoder_identity": {"encoder_id": "enc-test", "mm_dim": 2, "text": {"dim": 1}}}')
    repo = copy_repo(tmp_path_factory.mktemp("serve_repo"))
    feast_store.apply("duckdb", repo, root)
    store = feast_store.open_store("duckdb", repo, root)
    sets = root / "training_sets" / "ctr_dmf_v1"
    training_set.build(store, "ctr_dmf_v1", root / "events", sets, saved_dataset=False)
    out = tmp_path_factory.mktemp("serve_model")
    train(TrainConfig(training_set=str(sets), out=str(out), model=model_config("dmf", id_dim=8, mlp=(16,), dropout=0.0, buckets=5, tiers=4),
                      batch_size=64, max_epochs=2, patience_epochs=5, progress=False))
    din_sets = root / "training_sets" / "ctr_din_v1"
    training_set.build(store, "ctr_din_v1", root / "events", din_sets, saved_dataset=False)
    din = tmp_path_factory.mktemp("serve_din")
    train(TrainConfig(training_set=str(din_sets), out=str(din), model=model_config("din", id_dim=8, mlp=(16,), dropout=0.0),
                      batch_size=64, max_epochs=1, progress=False))
    return {"root": root, "repo": repo, "store": store, "sets": sets, "checkpoint": out / "checkpoint.pt",
            "din_sets": din_sets, "din_checkpoint": din / "checkpoint.pt"}


def offline_logits(checkpoint, sets, vectors=("mm_emb",)) -> dict:
    """(user, item, event_us) -> (logit, history length) from the training rows, through model.forward."""
    model, meta = load_checkpoint(checkpoint)
    out = {}
    for split in ("train", "valid", "test"):
        data = TrainingSetDataset(sets, LoaderConfig(split=split, batch_size=4096, vectors=vectors, shuffle=False))
        for batch in data:
            batch = prepare(batch, meta["vocab"], torch.device("cpu"))
            with torch.inference_mode():
                logits = model(batch)
            for u, i, t, logit, n in zip(batch["user_id"].tolist(), batch["item_id"].tolist(), batch["event_us"].tolist(),
                                         logits.tolist(), batch["hist_mask"].sum(1).tolist()):
                out.setdefault((u, i, t), []).append((logit, n))
    return out


@pytest.mark.parametrize("model,online", [("dmf", "sqlite"), ("din", "sqlite"), pytest.param("dmf", "redis", marks=pytest.mark.integration)])
def test_online_logits_equal_offline_training_rows(served, model, online, tmp_path):
    """Skew test: materialise up to T, score online; the logit equals the model's on the training row.
    DMF runs the decoupled path online and forward offline; DIN runs forward on a broadcast history.
    On SQLite and on a real Redis: both are read by online/rows.py."""
    import contextlib

    from tests.support.redis_server import redis_server

    checkpoint = served["checkpoint"] if model == "dmf" else served["din_checkpoint"]
    rows = offline_logits(checkpoint, served["sets"] if model == "dmf" else served["din_sets"], ("mm_emb",) if model == "dmf" else ())
    unique = {k: v[0] for k, v in rows.items() if len(v) == 1}
    times = sorted({t for (_, _, t) in unique})
    chosen = [times[len(times) // 4], times[len(times) // 2], times[-3]]  # ascending: incremental materialisation
    repo = copy_repo(tmp_path)  # an empty online store: each T's materialisation is all the store holds
    with contextlib.ExitStack() as servers:
        config = "duckdb"
        if online == "redis":
            (tmp_path / "redis").mkdir()
            port = servers.enter_context(redis_server(tmp_path / "redis"))
            path = repo / "feature_store.redis.yaml"
            path.write_text(path.read_text().replace("127.0.0.1:6379", f"127.0.0.1:{port}"))
            config = "redis"
        feast_store.apply(config, repo, served["root"])
        store = feast_store.open_store(config, repo, served["root"])
        scorer = Scorer.from_checkpoint(checkpoint, store)
        assert scorer.decoupled == (model == "dmf") and scorer.reader.fast is not None
        compared, with_history = 0, 0
        for t_us in chosen:
            at = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=t_us)
            store.materialize(start_date=START - dt.timedelta(days=60), end_date=at)
            users = sorted({u for (u, _, t) in unique if t == t_us})
            for user in users:
                keys = [k for k in unique if k[0] == user and k[2] == t_us]
                items = [k[1] for k in keys] + [1, 5, 20]  # plus other candidates in the same batch
                result = scorer.score(user, items, now=at)
                for key, item_score in zip(keys, result.items):
                    expected, n_hist = unique[key]
                    assert item_score.logit == pytest.approx(expected, abs=1e-5), (key, result)
                    assert result.history_len == n_hist
                    compared += 1
                    with_history += n_hist > 0
    assert compared >= 3 and with_history >= 2


def test_cold_start_unknown_items_and_stale_features(served):
    store = served["store"]
    store.materialize(start_date=START - dt.timedelta(days=60), end_date=START + dt.timedelta(days=31))
    scorer = Scorer.from_checkpoint(served["checkpoint"], store)
    at = START + dt.timedelta(days=31)
    cold = scorer.score(99_999, [1, 2], now=at)
    assert cold.user_flags == ["no_sequence", "no_user_stats"] and cold.history_len == 0
    assert all(i.score is not None and 0 < i.score < 1 for i in cold.items)

    result = scorer.score(1, [1, 20, 21], now=at)
    by_item = {i.item_id: i for i in result.items}
    assert by_item[1].error is None and by_item[1].flags == []
    assert "no_embedding" in by_item[20].flags and by_item[20].score is not None  # known item, no vector: as in training
    assert by_item[21].score is None and "unknown item" in by_item[21].error  # never a made-up vector

    replay = Scorer.from_checkpoint(served["checkpoint"], store, ScorerConfig(future_slack=None))
    later = replay.score(1, [1, 2], now=at + dt.timedelta(days=365 * 20))  # beyond the 10-year TTL
    assert "stale:user_sequence" in later.user_flags and later.history_len == 0
    # Running counters never expire (their views have no TTL): only the sequence is stale.
    assert not any("stale:item_stats" in i.flags for i in later.items) and later.stale_features == 1

    with pytest.raises(BadRequest, match="more than the limit of 3"):
        Scorer.from_checkpoint(served["checkpoint"], store, ScorerConfig(max_candidates=3)).score(1, [1, 2, 3, 4], now=at)
    with pytest.raises(BadRequest, match=r"item_ids\[1\] must be an integer"):
        scorer.score(1, [1, "2"], now=at)


def test_a_replay_never_takes_a_value_stamped_after_its_time(served):
    """/score with ``at`` in the past after later values were materialised: the online store holds
    each key's newest row only. A value stamped after ``at`` is flagged ``future`` and not used (the
    training join would not have had it): no history, no stats, no re-encoded vector; the log says so."""
    store = served["store"]
    store.materialize(start_date=START - dt.timedelta(days=60), end_date=START + dt.timedelta(days=31))
    scorer = Scorer.from_checkpoint(served["checkpoint"], store)
    logged = []
    scorer.served_hook = logged.append
    early = START + dt.timedelta(days=1)  # user 1's newest snapshot and stats, and most items' stats, are later
    items = list(range(1, 11))
    result = scorer.score(1, items, now=early)
    assert {"future:user_sequence", "future:user_stats"} <= set(result.user_flags) and result.history_len == 0
    stats = scorer.reader.read("item_stats", items, now=early)
    assert "future" in stats.status and [s == "future" for s in stats.status] == ["future:item_stats" in i.flags for i in result.items]
    by_item = {i.item_id: i for i in result.items}
    assert "future:item_embeddings" in by_item[5].flags  # re-encoded on 2021-01-15: its online vector is the new one
    assert all(i.score is not None for i in result.items)  # scored without the future values, as a cold row is
    assert logged[0].seq_status == "future"
    # At the very instant of user 1's newest click: its snapshot (stamped 1 us later) holds that click.
    # The SQLite store keeps the stamp cut to the second, which reads as "not after"; the microsecond
    # stamp of the history decides.
    seq = scorer.reader.read("user_sequence", [1], now=START + dt.timedelta(days=31))
    newest = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=seq.values["hist_ts_us"][0][-1])
    assert "future:user_sequence" in scorer.score(1, items, now=newest).user_flags
    assert "future:user_sequence" not in scorer.score(1, items, now=newest + dt.timedelta(microseconds=1)).user_flags
    now = scorer.score(1, items, now=START + dt.timedelta(days=31))  # at the store's own time: nothing is future
    assert not any(f.startswith("future:") for f in now.user_flags + [f for i in now.items for f in i.flags])


def test_item_cache_is_cleared_by_materialisation(served):
    store = served["store"]
    scorer = Scorer.from_checkpoint(served["checkpoint"], store)
    at = START + dt.timedelta(days=31)
    scorer.score(1, [1, 2], now=at)
    scorer.score(1, [1, 2], now=at)
    assert scorer.cache.hits > 0
    invalidations = scorer.cache.invalidations
    store.materialize(start_date=START - dt.timedelta(days=60), end_date=at)  # records an interval in the registry
    scorer.score(1, [1, 2], now=at)
    assert scorer.cache.invalidations == invalidations + 1


def test_the_user_side_is_cached_per_snapshot_and_scores_the_same(served, tmp_path):
    """Repeated requests for one user reuse the history's vectors and DMF's encode_user state
    (M-FALCON): the same logits as a scorer that recomputes them, and a new click (a new
    snapshot) is a miss that sees the new history."""
    repo = copy_repo(tmp_path)  # an online store of its own: this test writes a new snapshot
    feast_store.apply("duckdb", repo, served["root"])
    store = feast_store.open_store("duckdb", repo, served["root"])
    at = START + dt.timedelta(days=31)
    store.materialize(start_date=START - dt.timedelta(days=60), end_date=at)
    cached = Scorer.from_checkpoint(served["checkpoint"], store)
    fresh = Scorer.from_checkpoint(served["checkpoint"], store, ScorerConfig(user_cache_size=0))
    first = cached.score(1, [1, 2, 3], now=at)
    again = cached.score(1, [4, 2, 6, 7], now=at)  # other candidates: only they are scored
    assert (cached.user_cache.hits, cached.user_cache.misses) == (1, 1) and first.history_len > 0
    assert [i.logit for i in again.items] == pytest.approx([i.logit for i in fresh.score(1, [4, 2, 6, 7], now=at).items], abs=1e-6)
    assert fresh.user_cache.hits == 0 and not fresh.user_cache.entries

    stamp = at + dt.timedelta(seconds=1)  # a click on item 9: the feedback path writes a new snapshot like this
    hist = list(cached.reader.read("user_sequence", [1], at).values["hist_item_ids"][0]) + [9]
    store.write_to_online_store("user_sequence", pd.DataFrame({
        "user_id": [1], "event_timestamp": [stamp], "hist_item_ids": [hist], "hist_ts_us": [list(range(len(hist)))], "hist_len": [len(hist)]}))
    later = at + dt.timedelta(seconds=2)
    moved = cached.score(1, [4, 2, 6, 7], now=later)
    assert cached.user_cache.misses == 2 and moved.history_len == first.history_len + 1
    assert [i.logit for i in moved.items] == pytest.approx([i.logit for i in fresh.score(1, [4, 2, 6, 7], now=later).items], abs=1e-6)


def test_a_scorer_leaves_the_process_alone_and_the_server_tunes_it(served):
    """Scorer() sets nothing process-wide (an embedding app keeps its GC and thread pools);
    tune_for_serving, which mmfs serve calls once loaded, freezes the GC and bounds BLAS."""
    import gc

    from threadpoolctl import threadpool_info

    from mmfs.serving.tuning import ProcessTuning, tune_for_serving

    def blas():
        return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    gc.unfreeze()
    threads, pools = torch.get_num_threads(), blas()
    Scorer.from_checkpoint(served["checkpoint"], served["store"])
    assert gc.get_freeze_count() == 0 and torch.get_num_threads() == threads and blas() == pools
    limit = tune_for_serving(ProcessTuning(blas_threads=1))
    try:
        assert gc.get_freeze_count() > 0 and set(blas()) <= {1}
    finally:
        limit.restore_original_limits()
        gc.unfreeze()


def test_store_checks_refuse_another_service_or_encoder(served):
    _, meta = load_checkpoint(served["checkpoint"])
    check_store(served["store"], meta)
    with pytest.raises(StoreMismatch, match="ctr_dmf_v9"):
        check_store(served["store"], {**meta, "feature_service": "ctr_dmf_v9"})
    with pytest.raises(StoreMismatch, match="encoder identity differs"):
        check_store(served["store"], {**meta, "encoder_identity": {"encoder_id": "another-encoder"}})
    with pytest.raises(StoreMismatch, match="missing online"):
        check_store(served["store"], {**meta, "features": meta["features"] + ["item_stats:views"]})


def test_an_ablation_checkpoint_is_refused(served):
    """A DMF trained on s_j over one part of mm_emb would be served the fused s_j: skew, so it is refused."""
    from mmfs.serving.scorer import Scorer

    model, meta = load_checkpoint(served["checkpoint"])
    ablation = {**meta, "config": {**meta["config"], "model": {**meta["config"]["model"], "similarity": "text"}}}
    with pytest.raises(ValueError, match="similarity='text' is an ablation"):
        Scorer(model, ablation, served["store"])


def test_http_app(served):
    from fastapi.testclient import TestClient

    from mmfs.serving.app import ServeSettings, create_app

    at = (START + dt.timedelta(days=31)).isoformat()
    # The online store as this test needs it, whatever ran before (the test also runs alone).
    served["store"].materialize(start_date=START - dt.timedelta(days=60), end_date=START + dt.timedelta(days=31))
    settings = ServeSettings(checkpoint=str(served["checkpoint"]), root=str(served["root"]), repo=str(served["repo"]), max_candidates=5,
                             tune_process=False)
    with TestClient(create_app(settings, load_in_background=False)) as client:
        assert client.get("/health").json() == {"status": "ok", "pid": os.getpid()}  # the process that answered
        assert client.get("/ready").status_code == 200
        ok = client.post("/score", json={"user_id": 1, "item_ids": [1, 2, 21], "at": at})
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["feature_service"] == "ctr_dmf_v1" and body["model"] == "dmf"
        assert [i["item_id"] for i in body["items"]] == [1, 2, 21] and body["items"][2]["error"]
        too_many = client.post("/score", json={"user_id": 1, "item_ids": [1, 2, 3, 4, 5, 6]})
        assert too_many.status_code == 413 and "limit of 5" in too_many.json()["detail"]
        for bad in ({"user_id": 1, "item_ids": ["x"]}, {"user_id": 1, "item_ids": []}, {"user_id": "1", "item_ids": [1]},
                    {"user_id": 1, "item_ids": [1], "path": "/etc/passwd"}, {"user_id": 1, "item_ids": [1.5]}):
            response = client.post("/score", json=bad)
            assert response.status_code == 422 and response.json()["detail"][0]["field"], (bad, response.text)
        nan = client.post("/score", content='{"user_id": 1, "item_ids": [NaN]}', headers={"content-type": "application/json"})
        assert nan.status_code == 422
        naive = client.post("/score", json={"user_id": 1, "item_ids": [1], "at": "2021-02-01T00:00:00"})
        assert naive.status_code == 422 and "at" in naive.json()["detail"][0]["field"]

        # Events: checked and landed (202); mmfs stream applies them; the next score sees the click.
        before = client.post("/score", json={"user_id": 1, "item_ids": [3], "at": at}).json()
        clicked = (START + dt.timedelta(days=31, hours=1)).isoformat()
        click = {"events": [{"user_id": 1, "item_id": 7, "label": 1, "event_timestamp": clicked}]}
        pushed = client.post("/events", json=click)
        assert pushed.status_code == 202 and pushed.json()["accepted"] == 1
        assert client.post("/events", json=click).status_code == 202  # the client's retry: the stream applies it once
        unknown = client.post("/events", json={"events": [{"user_id": 1, "item_id": 999, "label": 1, "event_timestamp": clicked}]})
        assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "events.0.item_id"
        assert len(list((served["root"] / "_landing" / "events").glob("*.json"))) == 2
        run_stream = ["--root", str(served["root"]), "--repo", str(served["repo"]), "--available-now"]
        assert stream.main(run_stream) == 0
        # Posted after the stream applied the click, an event older than it is late: the batch path's.
        late = client.post("/events", json={"events": [{"user_id": 1, "item_id": 8, "label": 1, "event_timestamp": at}]})
        assert late.status_code == 202
        assert stream.main(run_stream) == 0
        report = [json.loads(line) for line in (served["root"] / "_stream" / "batches.jsonl").read_text().splitlines()]
        assert [(b["events"], b["duplicates"], b["late"]) for b in report] == [(1, 1, 0), (0, 0, 1)]
        after = client.post("/score", json={"user_id": 1, "item_ids": [3], "at": (START + dt.timedelta(days=31, hours=2)).isoformat()}).json()
        assert after["history_len"] == min(before["history_len"] + 1, 50)
        assert after["request_id"] and after["request_id"] != before["request_id"]

        metrics = client.get("/metrics").text
        assert 'mmfs_requests_total{endpoint="/score",status="200"}' in metrics
        requests = [line for line in metrics.splitlines() if line.startswith("mmfs_requests_total")]
        assert 'mmfs_requests_total{endpoint="/score",status="413"} 1.0' in requests, "\n".join(requests)
        assert "mmfs_score_latency_seconds_bucket" in metrics and "mmfs_stale_features_total" in metrics
        assert "mmfs_request_log_dropped_total 0.0" in metrics

    con = duckdb.connect()
    root = served["root"]
    event_row = con.execute(f"SELECT count(*) FROM read_parquet('{root}/events/*.parquet') WHERE user_id = 1 AND item_id = 7 "
                            f"AND event_timestamp = '{clicked}'::TIMESTAMPTZ").fetchone()[0]
    landing = con.execute(f"SELECT count(*) FROM read_parquet('{root}/feedback_events/*.parquet') WHERE item_id = 7").fetchone()[0]
    snapshot = con.execute(f"SELECT hist_item_ids FROM read_parquet('{root}/user_sequence_snapshots/*.parquet') WHERE user_id = 1 "
                           "ORDER BY event_timestamp DESC LIMIT 1").fetchone()[0]
    sim = con.execute(f"SELECT hist_sim, target_has_emb FROM read_parquet('{root}/target_similarity/*.parquet') "
                      f"WHERE user_id = 1 AND item_id = 7 AND event_timestamp = '{clicked}'::TIMESTAMPTZ").fetchall()
    assert event_row == 1 and landing == 1 and snapshot[-1] == 7
    # The user's running stats moved on by the click, online and offline, by the pipeline's rule.
    recount = con.execute(f"SELECT count(*), sum(label) FROM read_parquet('{root}/events/*.parquet') WHERE user_id = 1").fetchone()
    newest = con.execute(f"SELECT user_impressions, user_clicks, user_ctr FROM read_parquet('{root}/user_stats/*.parquet') "
                         "WHERE user_id = 1 ORDER BY event_timestamp DESC LIMIT 1").fetchone()
    assert newest[:2] == recount and newest[2] == pytest.approx((recount[1] + 0.5 * 2) / (recount[0] + 2))
    from mmfs.online.reader import OnlineReader

    online = OnlineReader(served["store"], "ctr_dmf_v1").read("user_stats", [1], now=dt.datetime.fromisoformat(clicked) + dt.timedelta(hours=1))
    assert (online.values["user_impressions"][0], online.values["user_clicks"][0]) == recount
    assert len(sim) == 1 and sim[0][1] is True and len(sim[0][0]) == before["history_len"]
    # The served-feature log holds what the score after the click used, as it used it.
    logged = con.execute(f"SELECT hist_item_ids, scores, seq_status, user_impressions, item_ids, hist_sim FROM "
                         f"read_parquet('{root}/_served/*.parquet') WHERE request_id = ?", [after["request_id"]]).fetchall()
    assert len(logged) == 1 and logged[0][0][-1] == 7 and logged[0][2] == "present" and logged[0][4] == [3]
    assert logged[0][1] == [pytest.approx(after["items"][0]["score"])] and logged[0][3] == recount[0]
    assert len(logged[0][5]) == 1 and len(logged[0][5][0]) == after["history_len"]


def wait_until(condition, seconds: float) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_ready_reports_a_failed_load(served, tmp_path, caplog):
    from fastapi.testclient import TestClient

    from mmfs.serving.app import ServeSettings, create_app

    settings = ServeSettings(checkpoint=str(tmp_path / "missing.pt"), root=str(served["root"]), repo=str(served["repo"]))
    with TestClient(create_app(settings, load_in_background=False)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["reason"].startswith("loading failed")
        assert str(tmp_path) not in ready.text  # no internal paths or exception text in a response...
        assert "missing.pt" in caplog.text  # ...the log has them
        assert client.post("/score", json={"user_id": 1, "item_ids": [1]}).status_code == 503


@pytest.mark.integration
def test_ready_is_false_while_redis_is_down_and_recovers(served, tmp_path):
    """Stop the online store mid-serving: /score answers 503 and /ready false; both recover when it returns."""
    from contextlib import ExitStack

    from fastapi.testclient import TestClient

    from mmfs.serving.app import ServeSettings, create_app
    from tests.support.redis_server import free_port, redis_server

    port = free_port()
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    first = ExitStack()
    first.enter_context(redis_server(tmp_path / "r1", port))
    try:
        repo = copy_repo(tmp_path)
        config = repo / "feature_store.redis.yaml"
        config.write_text(config.read_text().replace("127.0.0.1:6379", f"127.0.0.1:{port}"))
        feast_store.apply("redis", repo, served["root"])
        end = START + dt.timedelta(days=31)
        feast_store.open_store("redis", repo, served["root"]).materialize(start_date=START - dt.timedelta(days=60), end_date=end)
        body = {"user_id": 1, "item_ids": [1, 2], "at": end.isoformat()}
        settings = ServeSettings(checkpoint=str(served["checkpoint"]), root=str(served["root"]), repo=str(repo), config="redis",
                                 probe_interval_s=0.2)
        with TestClient(create_app(settings, load_in_background=False)) as client:
            healthy = client.post("/score", json=body)
            assert healthy.status_code == 200 and healthy.json()["history_len"] > 0
            first.close()  # redis-server stops
            down = client.post("/score", json=body)
            assert down.status_code == 503 and down.json()["detail"] == "online store unavailable" and down.headers["retry-after"]
            assert client.get("/ready").status_code == 503 and client.get("/health").status_code == 200
            with redis_server(tmp_path / "r2", port):
                feast_store.open_store("redis", repo, served["root"]).materialize(start_date=START - dt.timedelta(days=60), end_date=end)
                # No traffic needed: the readiness probe finds the store back on its own.
                assert wait_until(lambda: client.get("/ready").status_code == 200, seconds=10)
                assert client.post("/score", json=body).status_code == 200
                assert 'mmfs_errors_total{endpoint="/score",kind="store"}' in client.get("/metrics").text
    finally:
        first.close()


@pytest.mark.slow  # trains a second model (~1.5 min): make test-all; CI keeps the 20-minute budget
def test_backfill_v2_serves_beside_v1_without_touching_it(served, spark, tmp_path):
    """A new encoder's tables (item_embeddings_v2, target_similarity_v2) and service ctr_dmf_v2 come
    up beside v1: v1's tables are not rewritten, v1's checkpoint still serves, and a v2 checkpoint
    trained on ctr_dmf_v2 scores online exactly as on its training rows."""
    import hashlib
    import json
    import shutil

    from mmfs.pipelines.jobs import target_similarity
    from mmfs.pipelines.spark.table_io import write_table

    root = tmp_path / "root"
    shutil.copytree(served["root"], root, ignore=shutil.ignore_patterns("training_sets"))

    def fingerprint(table):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / table).iterdir())}

    v1_before = {t: fingerprint(t) for t in ("item_embeddings", "target_similarity")}
    # The backfill: a 3-d encoder, written beside v1 (as encode-items --table item_embeddings_v2 writes it).
    v2_rows = [Row(**{**r.asDict(), "mm_emb": [r.mm_emb[0] * 0.6, r.mm_emb[1] * 0.6, 0.8], "encoder_id": "enc-v2"}) for r in embedding_rows()]
    from mmfs.pipelines.spark.schemas import ITEM_EMBEDDINGS_SCHEMA

    write_table(spark.createDataFrame(v2_rows, ITEM_EMBEDDINGS_SCHEMA), str(root / "item_embeddings_v2"),
                meta={"encoder_identity": {"encoder_id": "enc-v2", "mm_dim": 3, "text": {"dim": 1}}})
    assert target_similarity.main(["--root", str(root), "--version", "v2"]) == 0
    assert {t: fingerprint(t) for t in v1_before} == v1_before

    repo = copy_repo(tmp_path)
    feast_store.apply("duckdb", repo, root)
    store = feast_store.open_store("duckdb", repo, root)
    services = {s.name for s in store.list_feature_services()}
    assert {"ctr_dmf_v1", "ctr_dmf_v2"} <= services
    from mmfs.serving.contract import store_features

    assert store_features(store, "ctr_dmf_v1") == store_features(served["store"], "ctr_dmf_v1")
    assert {f.split(":")[0] for f in store_features(store, "ctr_dmf_v2")} == {"user_sequence", "user_stats", "item_stats", "target_similarity_v2", "item_embeddings_v2"}
    assert store.get_feature_view("item_embeddings").tags["encoder_id"] == "enc-test"
    assert store.get_feature_view("item_embeddings_v2").tags["encoder_id"] == "enc-v2"

    sets = root / "training_sets" / "ctr_dmf_v2"
    training_set.build(store, "ctr_dmf_v2", root / "events", sets, saved_dataset=False)
    manifest = json.loads((sets / "manifest.json").read_text())
    assert manifest["encoder_identity"]["encoder_id"] == "enc-v2" and manifest["embedding_table"].endswith("item_embeddings_v2")
    out = tmp_path / "model_v2"
    train(TrainConfig(training_set=str(sets), out=str(out), model=model_config("dmf", id_dim=8, mlp=(16,), dropout=0.0, buckets=5, tiers=4),
                      batch_size=64, max_epochs=1, progress=False))

    rows = offline_logits(out / "checkpoint.pt", sets)
    unique = {k: v[0] for k, v in rows.items() if len(v) == 1 and v[0][1] > 0}
    t_us = sorted({t for (_, _, t) in unique})[len(unique) // 2]
    at = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=t_us)
    store.materialize(start_date=START - dt.timedelta(days=60), end_date=at)
    v2 = Scorer.from_checkpoint(out / "checkpoint.pt", store)
    assert v2.embedding_view == "item_embeddings_v2"
    for (user, item, t), (expected, n_hist) in unique.items():
        if t == t_us:
            result = v2.score(user, [item], now=at)
            assert result.items[0].logit == pytest.approx(expected, abs=1e-5)
            assert result.history_len == n_hist
    v1 = Scorer.from_checkpoint(served["checkpoint"], store)  # the deployed model still serves from the same store
    assert v1.embedding_view == "item_embeddings" and v1.score(1, [1, 2], now=at).items[0].score is not None

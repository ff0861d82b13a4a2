"""``mmfs serve --workers 2``: two real processes share the port and the SQLite online store; both
score, and events landed through both reach the online store, every click (mmfs stream applies them)."""
import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mmfs.store import feast_store
from mmfs.online.reader import OnlineReader
from mmfs.streaming import job as stream
from tests.serving.test_scorer import START, served  # noqa: F401 - the module's fixture
from tests.support.feast_tables import copy_repo
from tests.support.serve_process import serving_process, worker_pids

AT = START + dt.timedelta(days=31)


@pytest.mark.integration
def test_two_workers_score_and_no_click_is_lost_between_them(served, tmp_path):  # noqa: F811
    import shutil

    root = tmp_path / "tables"  # the stream appends to the tables: a copy of their own
    shutil.copytree(served["root"], root, ignore=shutil.ignore_patterns("training_sets"))
    repo = copy_repo(tmp_path)
    feast_store.apply("duckdb", repo, root)
    feast_store.open_store("duckdb", repo, root).materialize(start_date=START - dt.timedelta(days=60), end_date=AT)
    with serving_process(served["checkpoint"], root, repo, ready_timeout_s=180, workers=2) as (_, base):
        assert len(worker_pids(base, 2)) == 2
        score = httpx.post(f"{base}/score", json={"user_id": 1, "item_ids": [1, 2], "at": AT.isoformat()}, timeout=30)
        assert score.status_code == 200 and len(score.json()["items"]) == 2
        # Six clicks of user 1 at one time, sent at once: each batch extends the online sequence
        # that the one before it wrote, whichever process takes it.
        clicked = [11, 12, 13, 14, 15, 16]
        at = (AT + dt.timedelta(hours=1)).isoformat()

        def post(item):
            with httpx.Client(timeout=60) as client:  # a connection each: spread over the processes
                return client.post(f"{base}/events", json={"events": [{"user_id": 1, "item_id": item, "label": 1, "event_timestamp": at}]})

        with ThreadPoolExecutor(len(clicked)) as pool:
            answers = list(pool.map(post, clicked))
        assert [a.status_code for a in answers] == [202] * len(clicked), [a.text for a in answers]
    assert stream.main(["--root", str(root), "--repo", str(repo), "--available-now"]) == 0
    reader = OnlineReader(feast_store.open_store("duckdb", repo, root), "ctr_dmf_v1")
    hist = reader.read("user_sequence", [1], now=AT + dt.timedelta(hours=2)).values["hist_item_ids"][0]
    assert set(clicked) <= set(hist), hist

"""mmfs consistency: the served-feature log against the offline point-in-time values. A store that
serves what the tables hold passes; one that serves a wrong value is caught, named by feature."""
import datetime as dt
import json

import pandas as pd
import pytest

from mmfs.checks import consistency
from mmfs.serving.request_log import RequestLog
from mmfs.serving.scorer import Scorer
from tests.serving.test_scorer import START, served  # noqa: F401 - the module's fixture

AT = START + dt.timedelta(days=31)


def serve_and_log(served, log_dir, requests):  # noqa: F811
    scorer = Scorer.from_checkpoint(served["checkpoint"], served["store"])
    log = RequestLog(log_dir, scorer, flush_rows=4)
    results = [scorer.score(user, items, now=at) for user, items, at in requests]
    log.close()
    assert log.written == len(requests) and log.dropped == 0
    return results


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    assert consistency.psi([10, 20, 30], [10, 20, 30]) == 0
    assert consistency.psi([10, 20, 30], [30, 20, 10]) > consistency.psi([10, 20, 30], [12, 20, 28]) > 0


@pytest.mark.integration
def test_a_consistent_store_passes_and_a_wrong_online_value_is_caught(served, tmp_path):  # noqa: F811
    store = served["store"]
    store.materialize(start_date=START - dt.timedelta(days=60), end_date=AT)
    requests = [(user, [1, 2, 3, 5, 8], AT + dt.timedelta(hours=h)) for user in (1, 2, 3, 4) for h in (0, 5)]
    serve_and_log(served, tmp_path / "log", requests)
    out = tmp_path / "report"
    argv = ["--root", str(served["root"]), "--log", str(tmp_path / "log"), "--out", str(out),
            "--training-set", str(served["sets"]), "--max-psi", "100"]
    assert consistency.main(argv) == 0
    result = json.loads((out / "consistency.json").read_text())
    assert result["requests"] == len(requests) and result["passed"]
    items = result["features"]["item_stats:impressions"]
    assert items["compared"] == len(requests) * 5 and items["match"] == items["compared"]
    assert result["features"]["user_sequence:hist_item_ids"]["match"] > 0
    assert {"ctr", "hist_sim", "hist_len"} <= set(result["drift"]) and (out / "consistency.png").stat().st_size > 0

    # Item 2's stats online now say 999 impressions, which no table holds: a mismatch, named.
    store.write_to_online_store("item_stats", pd.DataFrame({"item_id": [2], "event_timestamp": [AT - dt.timedelta(days=1)],
                                                            "impressions": [999], "clicks": [1], "ctr": [0.5]}))
    serve_and_log(served, tmp_path / "log2", requests[:2])
    assert consistency.main([*argv[:2], "--log", str(tmp_path / "log2"), "--out", str(out), "--training-set", str(served["sets"]),
                             "--max-psi", "100"]) == 1
    result = json.loads((out / "consistency.json").read_text())
    assert result["features"]["item_stats:impressions"]["mismatch"] == 2
    assert any(f.startswith("item_stats:impressions: mismatch_rate") for f in result["failures"])
    store.materialize(start_date=START - dt.timedelta(days=60), end_date=AT)  # the store as the other tests expect it


def test_drift_is_judged_only_on_enough_served_values():
    thresholds = {"max_mismatch": 0.01, "max_missing": 0.01, "max_extra": 0.01, "max_psi": 0.25, "min_samples": 100}
    drifted = {"ctr": {"psi": 3.0, "train_n": 1000, "served_n": 500}, "user_ctr": {"psi": 8.0, "train_n": 1000, "served_n": 3}}
    result = consistency.report({}, drifted, 3, thresholds)
    assert result["failures"] == ["ctr: PSI 3.000 > 0.25"] and not result["passed"]
    assert "fewer than 100 served values" in consistency.markdown(result)

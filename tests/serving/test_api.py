"""POST /score's JSON answer (``score_body``): the default shape, one object per candidate, and the
opt-in arrays; an error entry's score is null in both, and each validates as its documented model."""
import json

import numpy as np

from mmfs.serving.api import ScoreArraysResponse, ScoreRequest, ScoreResponse, score_body
from mmfs.serving.results import ScoreResult

UNKNOWN = "unknown item: never seen"


def result() -> ScoreResult:
    """Three candidates: 7 scored, 8 flagged, 9 unknown (its score and logit are NaN)."""
    return ScoreResult(user_id=4, feature_service="ctr_dmf_v1", item_ids=[7, 8, 9], probabilities=np.array([0.25, 0.5, np.nan]),
                       logits=np.array([-1.0986, 0.0, np.nan]), flags=[[], ["new_item", "no_embedding"], ["new_item"]],
                       errors={2: UNKNOWN}, user_flags=["no_user_stats"], history_len=3, stale_features=1,
                       timings_ms={"total": 1.5}, request_id="r1")


def test_the_default_answer_is_one_object_per_candidate():
    body = json.loads(score_body(result(), "dmf"))
    assert body == {"user_id": 4, "feature_service": "ctr_dmf_v1", "model": "dmf",
                    "items": [{"item_id": 7, "score": 0.25, "flags": [], "error": None},
                              {"item_id": 8, "score": 0.5, "flags": ["new_item", "no_embedding"], "error": None},
                              {"item_id": 9, "score": None, "flags": ["new_item"], "error": UNKNOWN}],
                    "user_flags": ["no_user_stats"], "history_len": 3, "stale_features": 1, "timings_ms": {"total": 1.5},
                    "request_id": "r1"}
    ScoreResponse.model_validate(body)


def test_the_arrays_answer_holds_the_same_values_in_request_order():
    body = json.loads(score_body(result(), "dmf", "arrays"))
    assert body["item_ids"] == [7, 8, 9] and body["scores"] == [0.25, 0.5, None]
    assert body["item_flags"] == [[], ["new_item", "no_embedding"], ["new_item"]] and body["item_errors"] == [None, None, UNKNOWN]
    assert "items" not in body and body["user_flags"] == ["no_user_stats"] and body["request_id"] == "r1"
    ScoreArraysResponse.model_validate(body)


def test_the_answer_is_strict_json():
    """NaN must not leak as a bare token, which JSON parsers refuse."""
    for fmt in ("items", "arrays"):
        text = score_body(result(), "dmf", fmt).decode()
        assert "NaN" not in text
        json.loads(text, parse_constant=lambda token: (_ for _ in ()).throw(ValueError(token)))


def test_a_request_asks_for_items_unless_it_says_arrays():
    assert ScoreRequest.model_validate_json(b'{"user_id": 1, "item_ids": [2]}').format == "items"
    assert ScoreRequest.model_validate_json(b'{"user_id": 1, "item_ids": [2], "format": "arrays"}').format == "arrays"

"""The scorer's result: arrays in request order, one ``ItemScore`` each only when asked for."""
import numpy as np

from mmfs.serving.results import ItemScore, ScoreResult


def test_items_are_built_from_the_arrays_with_no_score_for_an_error():
    result = ScoreResult(user_id=1, feature_service="s", item_ids=[5, 6], probabilities=np.array([0.75, np.nan]),
                         logits=np.array([1.0986, np.nan]), flags=[["stale:item_stats"], []], errors={1: "unknown item"},
                         user_flags=[], history_len=0, stale_features=1, timings_ms={})
    assert result.items == [ItemScore(5, 0.75, 1.0986, ["stale:item_stats"], None), ItemScore(6, None, None, [], "unknown item")]
    assert result.scores == [0.75, None] and result.item_errors == [None, "unknown item"]

"""Model-free baselines: exact values on tiny inline data."""
import numpy as np
import pytest

from mmfs.model.baselines import CoLike, Popularity


def test_popularity_smooths_towards_the_train_rate_and_scores_unseen_items_with_it():
    items = np.array([1, 1, 1, 2])
    labels = np.array([1, 1, 0, 0])  # train positive rate 0.5
    pop = Popularity.fit(items, labels, prior_weight=2.0)
    assert pop.score(np.array([1, 2, 99])) == pytest.approx([(2 + 1) / (3 + 2), (0 + 1) / (1 + 2), 0.5])


def test_colike_is_the_mean_cosine_between_target_and_history_click_vectors():
    # clicks: user 1 -> items 10, 11; user 2 -> items 10, 12; user 3 -> item 12 (item 13 never clicked)
    users = np.array([1, 1, 2, 2, 3, 3])
    items = np.array([10, 11, 10, 12, 12, 13])
    labels = np.array([1, 1, 1, 1, 1, 0])
    colike = CoLike.fit(users, items, labels)
    hist = np.array([[11, 12, 0], [13, 0, 0], [11, 11, 0]])
    mask = np.array([[True, True, False], [True, False, False], [True, True, False]])
    got = colike.score(np.array([10, 10, 99]), hist, mask)
    # item 10 = (1, 1, 0)/sqrt2, 11 = (1, 0, 0), 12 = (0, 1, 1)/sqrt2: cos(10, 11) = 1/sqrt2, cos(10, 12) = 1/2
    assert got == pytest.approx([(1 / np.sqrt(2) + 0.5) / 2, 0.0, 0.0])

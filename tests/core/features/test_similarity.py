import numpy as np
import pytest

from mmfs.core.features.similarity import target_similarity


def test_cosine_of_known_vectors():
    target = np.array([[1.0, 0.0], [0.0, 2.0]])  # (B=2, D=2)
    history = np.array([
        [[1.0, 0.0], [0.0, 1.0], [-3.0, 0.0]],
        [[0.0, 5.0], [1.0, 1.0], [0.0, 0.0]],
    ])  # (2, L=3, 2)
    mask = np.array([[True, True, True], [True, True, False]])
    sims = target_similarity(target, history, mask)
    assert sims.dtype == np.float32
    np.testing.assert_allclose(sims, [[1.0, 0.0, -1.0], [1.0, np.sqrt(0.5), 0.0]], atol=1e-7)


def test_masked_and_zero_norm_positions_are_zero():
    target = np.array([[1.0, 1.0]])
    history = np.array([[[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]]])
    sims = target_similarity(target, history, np.array([[False, True, True]]))
    np.testing.assert_allclose(sims, [[0.0, 0.0, 1.0]], atol=1e-7)


def test_one_history_shared_by_many_candidates_matches_per_row_call():
    rng = np.random.default_rng(0)
    candidates = rng.normal(size=(7, 16))  # (C, D)
    history = rng.normal(size=(1, 5, 16))  # (1, L, D): one user
    mask = np.array([[True, True, True, False, True]])
    shared = target_similarity(candidates, history, mask)
    per_row = np.concatenate([target_similarity(candidates[i : i + 1], history, mask) for i in range(7)])
    assert shared.shape == (7, 5)
    np.testing.assert_array_equal(shared, per_row)


def test_values_stay_in_range_for_parallel_vectors():
    v = np.full((1, 64), 0.125, dtype=np.float32)
    sims = target_similarity(v, np.stack([v, -v], axis=1), np.ones((1, 2), bool))
    assert sims.max() <= 1.0 and sims.min() >= -1.0
    np.testing.assert_allclose(sims, [[1.0, -1.0]], atol=1e-6)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected target"):
        target_similarity(np.ones((2, 3)), np.ones((2, 4, 5)), np.ones((2, 4), bool))

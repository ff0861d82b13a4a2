"""The one-pass PCA of the encode job against numpy's SVD of the same rows."""
import numpy as np
import pytest

from mmfs.pipelines.spark.encoding import fit_pca


def test_one_pass_pca_equals_numpy_svd(spark):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + rng.standard_normal(6) * 3  # correlated, off-centre
    df = spark.createDataFrame([(row.tolist(),) for row in x.astype(np.float32)], "v array<float>").repartition(3)
    got = fit_pca(df, "v", 4)
    x = x.astype(np.float32).astype(np.float64)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    want = vt[:4].T.copy()  # (D, k)
    want *= np.sign(want[np.abs(want).argmax(axis=0), np.arange(4)])
    assert got["mean"] == pytest.approx(x.mean(axis=0), abs=1e-9)
    assert np.allclose(got["components"], want, atol=1e-6)
    assert got["explained_variance"] == pytest.approx((s**2 / (s**2).sum())[:4], abs=1e-9)
    assert fit_pca(df, "v", 10)["components"].shape == (6, 6)  # k capped at D

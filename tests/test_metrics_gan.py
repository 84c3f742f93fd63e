"""FID / KID / MINE (indep_seg/metrics_gan.py) against independent references (scipy, numpy
loops)."""

import numpy as np
import pytest
import scipy.linalg

from indep_seg import metrics_gan as mg


def _fid_scipy(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_matches_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 12))
    b = rng.standard_normal((250, 12)) @ rng.standard_normal((12, 12)) * 0.5 + 0.3
    np.testing.assert_allclose(mg.fid_from_features(a, b), _fid_scipy(a, b), rtol=1e-6)


def test_fid_of_gaussians_closed_form():
    # 1-D: FID = (mu1 - mu2)^2 + (s1 - s2)^2
    np.testing.assert_allclose(
        mg.frechet_distance([1.0], [[4.0]], [3.0], [[1.0]]), 4.0 + 1.0, rtol=1e-9
    )


def test_fid_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((200, 16)) @ rng.standard_normal((16, 16))
    assert abs(mg.fid_from_features(a, a)) < 1e-6
    images = rng.random((40, 16, 16, 3)).astype(np.float32)
    ext = mg.random_feature_extractor(seed=0, width=4, feature_dim=8, resolution=16)
    assert abs(mg.fid(images, images, ext)) < 1e-5
    assert mg.fid(images, np.clip(images * 0.3, 0, 1), ext) > 1e-3


def _kid_loops(x, y):
    m, d = len(x), x.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return kxx + kyy - 2 * kxy


def test_kid_matches_naive_unbiased_mmd():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((20, 5)), rng.standard_normal((20, 5)) + 0.5
    got, std = mg.kid_from_features(x, y, num_subsets=1, subset_size=20)
    np.testing.assert_allclose(got, _kid_loops(x, y), rtol=1e-9)
    assert std == 0.0
    # two independent samples of one distribution: the unbiased estimate is ~0
    a, b = rng.standard_normal((400, 5)), rng.standard_normal((400, 5))
    same, _ = mg.kid_from_features(a, b, num_subsets=5, subset_size=200)
    diff, _ = mg.kid_from_features(a, b + 0.5, num_subsets=5, subset_size=200)
    assert abs(same) < diff / 10


def test_inception_weights_absent_is_reported_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("INDEP_SEG_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(mg.InceptionWeightsUnavailable, match="cannot be downloaded"):
        mg.inception_feature_extractor()
    with pytest.raises(mg.InceptionWeightsUnavailable, match=str(tmp_path / "nope.h5")):
        mg.find_inception_weights(tmp_path / "nope.h5")


def test_feature_validation():
    with pytest.raises(ValueError, match="feats_b"):
        mg.fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(TypeError, match="feature_extractor"):
        mg.compute_features(np.zeros((2, 4, 4, 3), np.float32), "inception")


def test_mine_recovers_gaussian_mutual_information():
    rng = np.random.default_rng(3)
    n, rho = 3000, 0.9
    x = rng.standard_normal((n, 2))
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((n, 2))
    true = -0.5 * np.log(1 - rho**2) * 2  # 1.66 nats
    est = mg.mine_mutual_information(x, y, steps=400, batch_size=256, hidden=64)
    assert 0.6 * true < est < 1.15 * true
    indep = mg.mine_mutual_information(
        x, rng.standard_normal((n, 2)), steps=400, batch_size=256, hidden=64
    )
    assert abs(indep) < 0.15 and indep < est / 5


def test_layer_mutual_information_orders_dependence():
    """Layers whose hidden background copies the visible foreground have higher MI than independent
    ones."""
    rng = np.random.default_rng(4)
    n = 600
    f = rng.random((n, 8, 8, 3)).astype(np.float32)
    m = np.zeros((n, 8, 8, 1), np.float32)
    m[:, 2:6, 2:6] = 1
    b_indep = rng.random((n, 8, 8, 3)).astype(np.float32)
    b_leak = np.clip(f + 0.05 * rng.standard_normal(f.shape), 0, 1).astype(np.float32)
    kw = dict(downsample=2, steps=300, hidden=64)
    hi = mg.layer_mutual_information(f, b_leak, m, **kw)
    lo = mg.layer_mutual_information(f, b_indep, m, **kw)
    assert hi["mi"] > lo["mi"] + 0.5
    assert set(hi) == {"mi_binv_fvis", "mi_bvis_finv", "mi"}

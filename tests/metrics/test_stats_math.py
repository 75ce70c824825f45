"""The metric mathematics on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from styleforge.metrics import _stats_math as sm
from styleforge.metrics.feature_stats import FeatureStats


def _random_psd(rng: np.random.RandomState, d: int) -> np.ndarray:
    a = rng.randn(d, d + 3)
    return a @ a.T / d


def test_frechet_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)  # = 5 + 1 + 1 + 6.25
    assert expected == pytest.approx(13.25)
    assert sm.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, abs=1e-10)


def test_frechet_closed_form_commuting_rotated():
    """S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T: distance = sum (sqrt a - sqrt b)^2."""
    rng = np.random.RandomState(0)
    q, _ = np.linalg.qr(rng.randn(5, 5))
    a, b = rng.rand(5) + 0.1, rng.rand(5) + 0.1
    got = sm.frechet_distance(np.zeros(5), q @ np.diag(a) @ q.T, np.zeros(5), q @ np.diag(b) @ q.T)
    assert got == pytest.approx(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), abs=1e-10)


@pytest.mark.parametrize("d", [2, 6, 16])
def test_frechet_matches_scipy_sqrtm(d):
    rng = np.random.RandomState(d)
    s1, s2 = _random_psd(rng, d), _random_psd(rng, d)
    mu1, mu2 = rng.randn(d), rng.randn(d)
    root = scipy.linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(root))
    assert sm.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_frechet_of_a_set_with_itself_is_zero():
    feats = np.random.RandomState(1).randn(50, 8)
    stats = FeatureStats(capture_mean_cov=True)
    stats.append(feats[:20])
    stats.append(feats[20:])
    mu, cov = stats.get_mean_cov()
    assert abs(sm.frechet_distance(mu, cov, mu, cov)) < 1e-10
    assert sm.frechet_distance(mu, cov, mu + 1.0, cov) == pytest.approx(8.0, abs=1e-9)


def test_feature_stats_streaming_and_roundtrip(tmp_path):
    feats = np.random.RandomState(2).randn(37, 5).astype(np.float32)
    stats = FeatureStats(capture_all=True, capture_mean_cov=True, max_items=30)
    for lo in range(0, 37, 8):
        stats.append(feats[lo : lo + 8])
    assert stats.is_full() and stats.num_items == 30
    mu, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mu, feats[:30].astype(np.float64).mean(0), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(feats[:30].astype(np.float64), rowvar=False, bias=True), atol=1e-12)
    stats.save(tmp_path / "s.npz")
    back = FeatureStats.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.get_all(), feats[:30])
    np.testing.assert_allclose(back.get_mean_cov()[1], cov)


def test_kid_constant_sets_closed_form():
    d = 4
    u, v = np.full(d, 0.5), np.full(d, -1.0)
    real, gen = np.tile(u, (30, 1)), np.tile(v, (25, 1))

    def k(a, b):
        return (a @ b / d + 1) ** 3

    expected = k(u, u) + k(v, v) - 2 * k(u, v)
    assert sm.kernel_inception_distance(real, gen, num_subsets=3, max_subset_size=10) == pytest.approx(expected)


def test_kid_matches_naive_double_loop():
    rng = np.random.RandomState(3)
    real, gen = rng.randn(12, 3), rng.randn(9, 3) + 0.5
    m, d = 6, 3
    draw = np.random.RandomState(7)
    total = 0.0
    for _ in range(4):
        x = gen[draw.choice(len(gen), m, replace=False)]
        y = real[draw.choice(len(real), m, replace=False)]
        kxx = sum((x[i] @ x[j] / d + 1) ** 3 for i in range(m) for j in range(m) if i != j)
        kyy = sum((y[i] @ y[j] / d + 1) ** 3 for i in range(m) for j in range(m) if i != j)
        kxy = sum((x[i] @ y[j] / d + 1) ** 3 for i in range(m) for j in range(m))
        total += kxx / (m * (m - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (m * m)
    got = sm.kernel_inception_distance(real, gen, num_subsets=4, max_subset_size=m, seed=7)
    assert got == pytest.approx(total / 4, rel=1e-12)


def test_precision_recall_known_answer():
    real = np.arange(20.0)[:, None] * np.array([[1.0, 0.0]])
    far = 1000.0 + 100.0 * np.arange(10.0)[:, None] * np.array([[1.0, 0.0]])
    gen = np.concatenate([real[:10], far])
    # gen copies of 0..9 sit in the real manifold, the far points do not -> precision 1/2.
    # gen manifold: radii 3 at 0 and 9, 2 inside; real 0..12 are within reach, 13..19 are not -> recall 13/20.
    for batch in (7, 10000):
        p, r = sm.precision_recall(real, gen, k=3, batch_size=batch)
        assert p == pytest.approx(0.5) and r == pytest.approx(0.65)
    assert sm.precision_recall(real, real, k=3) == (1.0, 1.0)
    assert sm.precision_recall(real, real + 500.0, k=3) == (0.0, 0.0)


def test_knn_radii_exclude_self():
    pts = np.array([[0.0], [1.0], [3.0], [6.0]])
    np.testing.assert_allclose(sm.knn_radii(pts, k=1), [1.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(sm.knn_radii(pts, k=2, batch_size=3), [3.0, 2.0, 3.0, 5.0])


def test_inception_score_known_values():
    k = 5
    one_hot = np.eye(k)[np.tile(np.arange(k), 20)]  # 100 samples, every split of 10 holds each class twice
    mean, std = sm.inception_score(one_hot, num_splits=10)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-12)
    same = np.tile(np.array([[0.1, 0.2, 0.7]]), (30, 1))
    assert sm.inception_score(same, num_splits=10)[0] == pytest.approx(1.0)


def test_ppl_outlier_rejection():
    assert sm.ppl_from_distances(np.arange(200.0)) == pytest.approx(99.5)  # keeps 1..198
    vals = np.concatenate([np.full(198, 2.0), [1e9, -1e9]])  # with 200 values the extremes are dropped
    assert sm.ppl_from_distances(vals) == pytest.approx(2.0)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_knn_radii_blocked_equals_full_sort(batch):
    feats = np.random.RandomState(4).randn(40, 6)
    full = np.sqrt(((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1))
    expected = np.sort(full, axis=1)[:, 3]
    np.testing.assert_allclose(sm.knn_radii(feats, k=3, batch_size=batch), expected, rtol=1e-12, atol=1e-12)

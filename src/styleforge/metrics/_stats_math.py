"""The mathematics of the distribution metrics, in plain numpy (float64 where it matters).

- Fréchet distance (FID, Heusel et al. 2017) between Gaussians ``N(mu1, S1)`` and ``N(mu2, S2)``:
  ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})``. The trace of the matrix square root is the sum
  of the square roots of the eigenvalues of ``S1^{1/2} S2 S1^{1/2}``, computed from two symmetric
  eigendecompositions and the singular values of one product, which avoids ``scipy.linalg.sqrtm`` (tens of
  seconds at 2048-d on a small CPU, and inaccurate for rank-deficient covariances).
- KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``,
  averaged over random subsets.
- Improved precision and recall (Kynkäänniemi et al. 2019): k-NN hyperspheres around each sample of one set;
  the fraction of the other set's samples falling into at least one of them.
- Inception Score (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` over splits.
- The perceptual path length's outlier rejection (Karras et al. 2019).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "frechet_distance",
    "trace_sqrt_product",
    "kernel_inception_distance",
    "knn_radii",
    "manifold_coverage",
    "precision_recall",
    "inception_score",
    "ppl_from_distances",
]

KID_NUM_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000
KID_KERNEL_DEGREE = 3
PR_NHOOD_SIZE = 3
PR_BATCH_SIZE = 2500  # rows/columns per distance block: 2500^2 float64 = 50 MB
IS_NUM_SPLITS = 10
PPL_PERCENTILE_LO = 1
PPL_PERCENTILE_HI = 99


def _psd_eig(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (negative rounding noise clipped to 0) and eigenvectors of a symmetric PSD matrix."""
    vals, vecs = np.linalg.eigh((s + s.T) / 2)
    return np.clip(vals, 0.0, None), vecs


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((sigma1 sigma2)^{1/2})`` for symmetric PSD matrices, without a matrix square root.

    With ``sigma_i = V_i diag(l_i) V_i^T``, the eigenvalues of ``sigma1^{1/2} sigma2 sigma1^{1/2}`` (the
    spectrum of ``sigma1 sigma2``) are the squared singular values of ``Q = diag(sqrt l_2) V_2^T V_1 diag(sqrt
    l_1)`` (``Q^T Q = V_1^T sigma1^{1/2} sigma2 sigma1^{1/2} V_1``). Summing the singular values avoids taking
    square roots of rounding noise in near-zero eigenvalues, so rank-deficient covariances (fewer samples than
    features) stay exact: ``tr((S S)^{1/2}) = tr(S)`` to ~1e-12.
    """
    l1, v1 = _psd_eig(np.asarray(sigma1, dtype=np.float64))
    l2, v2 = _psd_eig(np.asarray(sigma2, dtype=np.float64))
    q = (v2.T @ v1) * np.sqrt(l1)[None, :] * np.sqrt(l2)[:, None]
    return float(np.linalg.svd(q, compute_uv=False).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (FID when they are Inception
    statistics).

    Args:
        mu1, mu2: means ``[D]``.
        sigma1, sigma2: covariances ``[D, D]`` (symmetric positive semi-definite).

    Returns:
        ``||mu1 - mu2||^2 + tr(sigma1 + sigma2) - 2 sum_i sqrt(lambda_i)``, with ``lambda_i`` the eigenvalues
        of ``sigma1^{1/2} sigma2 sigma1^{1/2}`` (the spectrum of ``sigma1 sigma2``); see
        :func:`trace_sqrt_product`.
    """
    mu1 = np.asarray(mu1, dtype=np.float64)
    mu2 = np.asarray(mu2, dtype=np.float64)
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    dist = np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2)
    return float(dist)


def kernel_inception_distance(
    real: np.ndarray,
    gen: np.ndarray,
    num_subsets: int = KID_NUM_SUBSETS,
    max_subset_size: int = KID_MAX_SUBSET_SIZE,
    seed: int = 0,
) -> float:
    """Unbiased MMD^2 (KID) between feature sets ``real [N_r, D]`` and ``gen [N_g, D]``.

    Each of ``num_subsets`` rounds draws ``m = min(N_r, N_g, max_subset_size)`` rows of each set without
    replacement (``numpy.random.RandomState(seed)``) and adds ``(sum_{i!=j} k(x_i,x_j) + sum_{i!=j}
    k(y_i,y_j)) / (m - 1) - 2 sum_{i,j} k(x_i, y_j) / m``; the total is divided by ``num_subsets * m``. ``k(a,
    b) = (a.b / D + 1)^3``.
    """
    real = np.asarray(real, dtype=np.float64)
    gen = np.asarray(gen, dtype=np.float64)
    d = real.shape[1]
    if gen.shape[1] != d:
        raise ValueError(f"feature sizes differ: {real.shape} vs {gen.shape}")
    m = min(len(real), len(gen), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(real)} real and {len(gen)} generated")
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(len(gen), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        a = (x @ x.T / d + 1) ** KID_KERNEL_DEGREE + (y @ y.T / d + 1) ** KID_KERNEL_DEGREE
        b = (x @ y.T / d + 1) ** KID_KERNEL_DEGREE
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / num_subsets / m)


def _pairwise_dist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[len(x), len(y)]`` (float64 accumulation, negative rounding clipped)."""
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.sqrt(np.clip(sq, 0.0, None))


def knn_radii(features: np.ndarray, k: int = PR_NHOOD_SIZE, batch_size: int = PR_BATCH_SIZE) -> np.ndarray:
    """Distance from each row of ``features [N, D]`` to its ``k``-th nearest neighbour in the set (itself
    excluded: the self-distance 0 is the first of the ``k + 1`` smallest)."""
    feats = np.asarray(features, dtype=np.float64)
    if len(feats) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} samples, got {len(feats)}")
    radii = np.empty(len(feats))
    for lo in range(0, len(feats), batch_size):
        rows = feats[lo : lo + batch_size]
        nearest = np.full((len(rows), k + 1), np.inf)  # the k + 1 smallest distances seen so far (unordered)
        for c in range(0, len(feats), batch_size):
            both = np.concatenate([nearest, _pairwise_dist(rows, feats[c : c + batch_size])], axis=1)
            nearest = np.partition(both, k, axis=1)[:, : k + 1]
        radii[lo : lo + len(rows)] = nearest.max(axis=1)
    return radii


def manifold_coverage(
    probes: np.ndarray, manifold: np.ndarray, radii: np.ndarray, batch_size: int = PR_BATCH_SIZE
) -> float:
    """Fraction of ``probes`` lying inside at least one hypersphere ``||p - m_j|| <= radii[j]`` of the
    manifold."""
    probes = np.asarray(probes, dtype=np.float64)
    manifold = np.asarray(manifold, dtype=np.float64)
    inside = np.zeros(len(probes), dtype=bool)
    for lo in range(0, len(probes), batch_size):
        rows = probes[lo : lo + batch_size]
        hit = np.zeros(len(rows), dtype=bool)
        for c in range(0, len(manifold), batch_size):
            hit |= (_pairwise_dist(rows, manifold[c : c + batch_size]) <= radii[None, c : c + batch_size]).any(axis=1)
        inside[lo : lo + len(rows)] = hit
    return float(inside.mean())


def precision_recall(
    real: np.ndarray, gen: np.ndarray, k: int = PR_NHOOD_SIZE, batch_size: int = PR_BATCH_SIZE
) -> tuple[float, float]:
    """Improved precision (generated samples inside the real manifold) and recall (real samples inside the
    generated manifold), manifolds built from ``k``-NN radii. Distances are computed in row and column
    batches."""
    precision = manifold_coverage(gen, real, knn_radii(real, k, batch_size), batch_size)
    recall = manifold_coverage(real, gen, knn_radii(gen, k, batch_size), batch_size)
    return precision, recall


def inception_score(probs: np.ndarray, num_splits: int = IS_NUM_SPLITS) -> tuple[float, float]:
    """Mean and standard deviation over ``num_splits`` contiguous splits of ``exp(mean_x KL(p(y|x) ||
    p(y)))``.

    Args:
        probs: class probabilities ``[N, K]`` (rows sum to 1).
    """
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    if n < num_splits:
        raise ValueError(f"Inception Score with {num_splits} splits needs at least {num_splits} samples, got {n}")
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits : (i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def ppl_from_distances(dist: np.ndarray) -> float:
    """Mean of the per-sample path lengths after dropping those below the 1st ('lower') or above the 99th
    ('higher') percentile, as in the official PPL."""
    dist = np.asarray(dist, dtype=np.float64)
    lo = np.percentile(dist, PPL_PERCENTILE_LO, method="lower")
    hi = np.percentile(dist, PPL_PERCENTILE_HI, method="higher")
    return float(dist[(dist >= lo) & (dist <= hi)].mean())

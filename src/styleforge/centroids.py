"""Multi-modal truncation (StyleGAN-XL, Sauer et al. 2022, section 4.3): truncate toward the nearest of K
centroids of W instead of toward the single average.

A class-conditional generator over many classes has a W distribution with many modes, and pulling every sample
toward one mean (or its class's mean) loses variety. The official tool (``gen_images.py`` / ``gen_video.py`` with
``--centroids-path``) therefore clusters W samples with k-means and truncates each sample toward the centroid
nearest to it:

1. :func:`sample_w` draws ``num`` latents ``z`` (and, for a conditional G, uniformly random classes) and keeps
   ``w = mapping(z, c)[:, 0]`` (no truncation); :func:`kmeans` clusters them into ``K`` centroids, written as a
   ``[K, w_dim]`` float32 ``.npy`` (``styleforge centroids``).
2. :func:`truncate_to_centroids`: for each sample, the centroid ``c`` nearest (L2) to ``w[:, 0]``, then
   ``w = c + psi (w - c)`` on every layer. Class-agnostic, as the official code.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from styleforge.utils.errors import UserInputError

__all__ = ["sample_w", "kmeans", "compute_centroids", "load_centroids", "truncate_to_centroids", "save_centroids"]

#: Lloyd iterations at most (they stop earlier when no assignment changes)
KMEANS_MAX_ITERS = 100
#: points per block of the distance computation (keeps the [points, K] matrix small)
KMEANS_BLOCK = 8192


@torch.no_grad()
def sample_w(G: torch.nn.Module, num: int, seed: int = 0, batch_size: int = 256,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """``[num, w_dim]``: ``w[:, 0]`` of ``num`` random latents (seeded; uniformly random classes when
    conditional), without truncation."""
    if num < 1:
        raise UserInputError(f"--num must be at least 1, got {num}.")
    gen = torch.Generator().manual_seed(int(seed))
    c_dim = int(getattr(G, "c_dim", 0))
    out = []
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        z = torch.randn(n, G.z_dim, generator=gen)
        c = torch.zeros(n, c_dim)
        if c_dim:
            c[torch.arange(n), torch.randint(c_dim, (n,), generator=gen)] = 1
        ws = G.mapping(z.to(device), c.to(device), truncation_psi=1.0)
        out.append((ws[:, 0] if ws.ndim == 3 else ws).float().cpu())
    return torch.cat(out)


def _nearest(points: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index [N], squared distance [N])`` of each point's nearest centroid."""
    idx, dist = [], []
    c2 = centroids.square().sum(1)
    for block in points.split(KMEANS_BLOCK):
        d = block.square().sum(1, keepdim=True) - 2 * block @ centroids.T + c2[None]
        m = d.min(dim=1)
        idx.append(m.indices)
        dist.append(m.values.clamp(min=0))
    return torch.cat(idx), torch.cat(dist)


def kmeans(points: torch.Tensor, k: int, seed: int = 0, max_iters: int = KMEANS_MAX_ITERS) -> torch.Tensor:
    """``[k, D]`` centroids of ``points [N, D]`` (float64 inside): k-means++ seeding, then Lloyd iterations until
    no assignment changes (or ``max_iters``). An empty cluster is restarted at the point farthest from its
    centroid. Deterministic for a given ``seed``."""
    n = points.shape[0]
    if not 1 <= k <= n:
        raise UserInputError(f"--k must be between 1 and the number of samples ({n}), got {k}.")
    x = points.double()
    gen = torch.Generator().manual_seed(int(seed))
    centroids = x[torch.randint(n, (1,), generator=gen)]
    _, d2 = _nearest(x, centroids)
    for _ in range(1, k):  # k-means++: the next centroid with probability proportional to D(x)^2
        total = d2.sum()
        pick = torch.multinomial(d2 / total, 1, generator=gen) if total > 0 else torch.randint(n, (1,), generator=gen)
        centroids = torch.cat([centroids, x[pick]])
        d2 = torch.minimum(d2, (x - x[pick]).square().sum(1))
    assign = torch.full((n,), -1, dtype=torch.long)
    for _ in range(max_iters):
        new, d2 = _nearest(x, centroids)
        if torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).double()
        for j in torch.nonzero(counts == 0).flatten().tolist():
            far = int(d2.argmax())
            sums[j], counts[j] = x[far], 1.0
            d2[far] = 0
        centroids = sums / counts[:, None]
    return centroids.float()


def compute_centroids(G: torch.nn.Module, num: int = 10_000, k: int = 64, seed: int = 0, batch_size: int = 256,
                      device: torch.device | str = "cpu") -> np.ndarray:
    """``[k, w_dim]`` float32 k-means centroids of ``num`` W samples of ``G`` (see the module docstring)."""
    return kmeans(sample_w(G, num, seed, batch_size, device), k, seed).numpy().astype(np.float32)


def save_centroids(path: str | os.PathLike, centroids: np.ndarray) -> Path:
    """Write ``[K, w_dim]`` centroids as ``.npy`` (atomically)."""
    import io

    from styleforge.utils.io import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, np.asarray(centroids, dtype=np.float32))
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out


def load_centroids(path: str | os.PathLike, w_dim: int | None = None) -> torch.Tensor:
    """``[K, w_dim]`` float32 centroids from a ``.npy`` (checked against the generator's ``w_dim``)."""
    p = Path(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserInputError(f"--centroids {p}: not a readable .npy of centroids ({e}).") from None
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise UserInputError(f"--centroids {p}: expected a [K, w_dim] array, got shape {arr.shape}.")
    if w_dim is not None and arr.shape[1] != w_dim:
        raise UserInputError(f"--centroids {p}: {arr.shape[1]}-dimensional centroids, but this network's w has "
                             f"{w_dim} dimensions; compute them for this network with `styleforge centroids`.")
    return torch.from_numpy(arr.astype(np.float32))


def truncate_to_centroids(ws: torch.Tensor, centroids: torch.Tensor, psi: float) -> torch.Tensor:
    """``ws [N, num_ws, w_dim]`` truncated toward each sample's nearest centroid (nearest to ``ws[:, 0]``):
    ``c + psi (w - c)`` on every layer."""
    cents = centroids.to(ws)
    nearest, _ = _nearest(ws[:, 0], cents)
    c = cents[nearest][:, None, :]
    return c + psi * (ws - c)

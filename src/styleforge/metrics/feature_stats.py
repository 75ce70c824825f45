"""Streaming feature statistics: running mean and covariance in float64, optionally every feature vector.

Saved as ``.npz`` (plain arrays, no pickle) through an atomic write, so cached dataset statistics are safe to
load.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch

from styleforge.utils.io import atomic_write_bytes

__all__ = ["FeatureStats"]


class FeatureStats:
    """Accumulate features ``[N, D]`` batch by batch.

    Args:
        capture_all: keep every feature vector (KID, precision/recall, IS need them).
        capture_mean_cov: accumulate ``sum x`` and ``sum x x^T`` in float64 (FID).
        max_items: stop accepting rows after this many (extra rows of the last batch are dropped).
    """

    def __init__(self, capture_all: bool = False, capture_mean_cov: bool = False, max_items: int | None = None) -> None:
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features: int | None = None
        self._chunks: list[np.ndarray] = []
        self._sum: np.ndarray | None = None
        self._sum_sq: np.ndarray | None = None

    def is_full(self) -> bool:
        """Whether ``max_items`` rows have been accepted."""
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x: np.ndarray | torch.Tensor) -> None:
        """Add a batch ``[B, D]`` (torch tensors are moved to the CPU)."""
        if isinstance(x, torch.Tensor):
            x = x.detach().float().cpu().numpy()
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {x.shape}")
        if self.num_features is None:
            self.num_features = x.shape[1]
            if self.capture_mean_cov:
                self._sum = np.zeros(self.num_features, dtype=np.float64)
                self._sum_sq = np.zeros((self.num_features, self.num_features), dtype=np.float64)
        elif x.shape[1] != self.num_features:
            raise ValueError(f"feature size changed from {self.num_features} to {x.shape[1]}")
        if self.max_items is not None:
            x = x[: max(self.max_items - self.num_items, 0)]
        if len(x) == 0:
            return
        self.num_items += len(x)
        if self.capture_all:
            self._chunks.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self._sum += x64.sum(axis=0)
            self._sum_sq += x64.T @ x64

    @classmethod
    def merge_ranks(cls, parts: list[FeatureStats]) -> FeatureStats:
        """The statistics of all processes as one, when process ``r`` accumulated batches ``r, r + R, ...``:
        the captured feature vectors are put back in batch order (batch ``j`` of process ``r`` is batch
        ``j * R + r``), so that they equal a single process's; the sums are added."""
        first = parts[0]
        out = cls(capture_all=first.capture_all, capture_mean_cov=first.capture_mean_cov, max_items=first.max_items)
        out.num_features = next((p.num_features for p in parts if p.num_features is not None), None)
        out.num_items = sum(p.num_items for p in parts)
        if first.capture_all:
            longest = max(len(p._chunks) for p in parts)
            out._chunks = [p._chunks[j] for j in range(longest) for p in parts if j < len(p._chunks)]
        if first.capture_mean_cov:
            sums = [p for p in parts if p._sum is not None]
            if sums:
                out._sum = np.sum([p._sum for p in sums], axis=0)
                out._sum_sq = np.sum([p._sum_sq for p in sums], axis=0)
        return out

    def get_all(self) -> np.ndarray:
        """Every captured feature vector, ``[num_items, D]`` float32."""
        if not self.capture_all:
            raise RuntimeError("FeatureStats was created with capture_all=False")
        if not self._chunks:
            return np.zeros((0, self.num_features or 0), dtype=np.float32)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks, axis=0)]
        return self._chunks[0]

    def get_mean_cov(self, unbiased: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``[D]`` and covariance ``[D, D]`` in float64: biased (``1/N``, as the official FID computes it) or,
        with ``unbiased``, ``1/(N-1)`` (``numpy.cov``, as pytorch-fid computes it)."""
        if not self.capture_mean_cov:
            raise RuntimeError("FeatureStats was created with capture_mean_cov=False")
        if self.num_items == 0:
            raise ValueError("no features were accumulated")
        mean = self._sum / self.num_items
        cov = self._sum_sq / self.num_items - np.outer(mean, mean)
        if unbiased:
            if self.num_items < 2:
                raise ValueError("an unbiased covariance needs at least two feature vectors")
            cov = cov * (self.num_items / (self.num_items - 1))
        return mean, cov

    # -- persistence
    # -------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics to ``path`` (``.npz``) atomically."""
        arrays = {
            "num_items": np.array(self.num_items),
            "num_features": np.array(-1 if self.num_features is None else self.num_features),
            "capture_all": np.array(self.capture_all),
            "capture_mean_cov": np.array(self.capture_mean_cov),
            "max_items": np.array(-1 if self.max_items is None else self.max_items),
        }
        if self.capture_mean_cov and self._sum is not None:
            arrays["sum"] = self._sum
            arrays["sum_sq"] = self._sum_sq
        if self.capture_all:
            arrays["features"] = self.get_all()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Read statistics written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as data:
            max_items = int(data["max_items"])
            stats = cls(
                capture_all=bool(data["capture_all"]),
                capture_mean_cov=bool(data["capture_mean_cov"]),
                max_items=None if max_items < 0 else max_items,
            )
            stats.num_items = int(data["num_items"])
            nf = int(data["num_features"])
            stats.num_features = None if nf < 0 else nf
            if "sum" in data:
                stats._sum = data["sum"].copy()
                stats._sum_sq = data["sum_sq"].copy()
            if "features" in data:
                stats._chunks = [data["features"].copy()]
        return stats

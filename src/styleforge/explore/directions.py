"""Editing directions in W: the ``dirs.npz`` files that ``styleforge directions`` writes (SeFa, GANSpace).

File format (numpy ``.npz``, read without pickle):

- ``directions``: float32 ``[K, w_dim]``, one unit-length direction per row;
- ``values``: ``[K]`` the strength of each direction (eigenvalue or variance), in descending order;
- ``method``: a string naming how they were found (``"sefa"``, ``"ganspace"``, ...);
- ``layers`` (optional): int ``[L]`` indices into ``ws`` that an edit moves; absent = every layer.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from styleforge.utils.errors import UserInputError

__all__ = ["Directions", "load_directions", "UNIT_TOLERANCE"]

#: how far a row's norm may be from 1 before the file is refused
UNIT_TOLERANCE = 1e-3
_REQUIRED = ("directions", "values", "method")


@dataclass(frozen=True)
class Directions:
    """Directions read from one file.

    Attributes:
        name: the file's name without ``.npz``, shown in the explorer.
        directions: float32 ``[K, w_dim]`` unit rows.
        values: float64 ``[K]``, descending.
        method: how the directions were found.
        layers: int64 ``[L]`` ws indices an edit applies to, or ``None`` for all.
    """

    name: str
    directions: np.ndarray
    values: np.ndarray
    method: str
    layers: np.ndarray | None

    @property
    def w_dim(self) -> int:
        return int(self.directions.shape[1])

    def __len__(self) -> int:
        return int(self.directions.shape[0])


def load_directions(path: str | os.PathLike) -> Directions:
    """Read and check a ``dirs.npz`` file.

    Raises:
        UserInputError: a missing or unreadable file, a missing key, wrong shapes or dtypes, rows that are not
            unit vectors, values not in descending order, or layer indices that are negative or repeated.
    """
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"Directions file {p} does not exist; write one with `styleforge directions`.")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserInputError(f"{p} is not a readable .npz file without pickled objects ({e}).") from e
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise UserInputError(
            f"{p} lacks {', '.join(missing)}; a directions file holds 'directions' [K, w_dim], 'values' [K], "
            "'method' and optionally 'layers'."
        )
    d = arrays["directions"]
    if d.ndim != 2 or d.shape[0] < 1 or d.dtype != np.float32:
        raise UserInputError(f"{p}: 'directions' must be float32 [K, w_dim], got {d.dtype} {list(d.shape)}.")
    if not np.isfinite(d).all():
        raise UserInputError(f"{p}: 'directions' holds NaN or infinite values.")
    norms = np.linalg.norm(d.astype(np.float64), axis=1)
    bad = np.flatnonzero(np.abs(norms - 1) > UNIT_TOLERANCE)
    if bad.size:
        raise UserInputError(
            f"{p}: direction {int(bad[0])} has length {norms[bad[0]]:.4f}; every row must be a unit vector."
        )
    values = arrays["values"]
    if values.shape != (d.shape[0],) or not np.issubdtype(values.dtype, np.number):
        raise UserInputError(f"{p}: 'values' must be numbers of shape [{d.shape[0]}], got {list(values.shape)}.")
    values = values.astype(np.float64)
    if np.any(np.diff(values) > 0):
        raise UserInputError(f"{p}: 'values' must be in descending order (the strongest direction first).")
    method = arrays["method"]
    if method.ndim != 0 or method.dtype.kind not in "US":
        raise UserInputError(f"{p}: 'method' must be a single string, got {method.dtype} {list(method.shape)}.")
    layers = arrays.get("layers")
    if layers is not None:
        if layers.ndim != 1 or layers.size == 0 or not np.issubdtype(layers.dtype, np.integer):
            raise UserInputError(f"{p}: 'layers' must be a non-empty 1-D integer array, got {layers.dtype}.")
        if layers.min() < 0 or len(np.unique(layers)) != layers.size:
            raise UserInputError(f"{p}: 'layers' must hold distinct non-negative ws indices, got {layers.tolist()}.")
        layers = layers.astype(np.int64)
    name = p.name[: -len(".npz")] if p.name.endswith(".npz") else p.name
    return Directions(name=name, directions=d, values=values, method=str(method), layers=layers)

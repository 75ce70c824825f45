"""Argument parsing shared by the signal-processing ops (private).

The conventions are those of the StyleGAN2/3 resampling ops: a scaling factor is an int or ``(sx, sy)``; a
padding is an int, ``(px, py)`` or ``(x0, x1, y0, y1)``; a filter is ``None`` (identity), 1-D (separable) or
2-D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["IMPLS", "check_impl", "parse_scaling", "parse_padding", "filter_size"]

#: accepted values of the ``impl=`` argument of every op. ``"compile"`` is the ``torch.compile`` path of
#: :func:`styleforge.ops.filtered_lrelu.filtered_lrelu`; the ops without a compiled form run their fast path for
#: it, so that one setting (``Network.set_ops_impl``) can apply to a whole network.
IMPLS = ("ref", "fast", "auto", "compile")


def check_impl(impl: str) -> str:
    """Resolve ``impl`` to ``"ref"`` or ``"fast"`` (``"auto"`` and ``"compile"`` pick the fast path)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return "ref" if impl == "ref" else "fast"


def parse_scaling(scaling: int | Sequence[int]) -> tuple[int, int]:
    """``s`` or ``(sx, sy)`` -> ``(sx, sy)``, both integers >= 1."""
    if isinstance(scaling, int):
        scaling = (scaling, scaling)
    sx, sy = (int(s) for s in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f"up/down factors must be >= 1, got {(sx, sy)}")
    return sx, sy


def parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """``p``, ``(px, py)`` or ``(x0, x1, y0, y1)`` -> ``(x0, x1, y0, y1)``; negative values crop."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        x0, x1, y0, y1 = padding
        return x0, x1, y0, y1
    raise ValueError(f"padding must be an int, (px, py) or (x0, x1, y0, y1), got {padding}")


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """Width and height ``(fw, fh)`` of a filter; 1-D filters are square (separable), ``None`` is 1x1."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"a filter must be 1-D or 2-D, got shape {list(f.shape)}")
    return int(f.shape[-1]), int(f.shape[0])

"""Named metrics (``fid50k_full``, ``kid50k_full``, ``eqt50k_int``, ...) and the context they run in.

A metric is a function ``fn(ctx: MetricContext) -> dict[str, float]`` registered with :func:`register_metric`. The
names follow the official tools; the sample count is part of the name (``fid10k`` uses 10k generated images).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from styleforge.utils.errors import UserInputError

__all__ = ["MetricContext", "register_metric", "list_metrics", "get_metric", "compute_metric"]

# Modules that register metrics; imported on first use.
_METRIC_MODULES = (
    "styleforge.metrics.fid",
    "styleforge.metrics.kid",
    "styleforge.metrics.precision_recall",
    "styleforge.metrics.inception_score",
    "styleforge.metrics.ppl",
    "styleforge.metrics.equivariance",
)


@dataclass
class MetricContext:
    """Everything a metric may need. Fields a metric does not use may be left at their defaults.

    Attributes:
        G: the generator to evaluate (``None`` when comparing two image sets).
        dataset: the real dataset (``styleforge.data.open_dataset`` object), or ``None``.
        device: torch device for the feature network and G.
        batch_size: images per forward pass.
        num_gen: override of the number of generated images (``None``: the count in the metric's name).
        truncation_psi: truncation used when sampling G.
        progress: show tqdm progress bars.
        cache: cache real-data statistics on disk.
        seed: seed of the sampling RNG.
        options: metric-specific extra options (e.g. a path to feature-network weights, a second image folder).
        rank, num_ranks: this process and the number of processes computing the metric together: each embeds
            every ``num_ranks``-th batch of real and generated images (as the official metrics do).
        gather: with ``num_ranks > 1``, a collective ``obj -> [obj of rank 0, obj of rank 1, ...]`` (e.g.
            ``DistContext.all_gather_object``) that combines the ranks' statistics; every rank gets the result.
    """

    G: torch.nn.Module | None = None
    dataset: Any = None
    device: torch.device | str = "cpu"
    batch_size: int = 32
    num_gen: int | None = None
    truncation_psi: float = 1.0
    progress: bool = True
    cache: bool = True
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    num_ranks: int = 1
    gather: Callable[[Any], list[Any]] | None = None

    def __post_init__(self) -> None:
        if self.num_ranks > 1 and self.gather is None:
            raise ValueError("MetricContext: num_ranks > 1 needs a gather function (all_gather_object)")
        if not 0 <= self.rank < max(self.num_ranks, 1):
            raise ValueError(f"MetricContext: rank {self.rank} is not in [0, {self.num_ranks})")


_METRICS: dict[str, Callable[[MetricContext], dict[str, float]]] = {}
_loaded = False


def register_metric(name: str) -> Callable:
    """Decorator registering ``fn(ctx) -> dict[str, float]`` under ``name``."""

    def deco(fn: Callable[[MetricContext], dict[str, float]]) -> Callable[[MetricContext], dict[str, float]]:
        if name in _METRICS:
            raise RuntimeError(f"metric {name!r} registered twice")
        _METRICS[name] = fn
        return fn

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _METRIC_MODULES:  # every module must import: a missing one is a broken install, never skipped
        importlib.import_module(mod)
    _loaded = True


def list_metrics() -> list[str]:
    """Names of all registered metrics."""
    _load_all()
    return sorted(_METRICS)


def get_metric(name: str) -> Callable[[MetricContext], dict[str, float]]:
    """The metric function registered under ``name``; unknown names raise an error listing the valid ones."""
    _load_all()
    if name not in _METRICS:
        raise UserInputError(f"Unknown metric {name!r}; available: {', '.join(list_metrics())}.")
    return _METRICS[name]


def compute_metric(name: str, ctx: MetricContext) -> dict[str, float]:
    """Run the metric ``name`` in ``ctx``."""
    return get_metric(name)(ctx)

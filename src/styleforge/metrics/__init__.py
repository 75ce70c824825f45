"""Quality metrics with the official names and protocols: FID, KID, precision/recall, IS, PPL, rFID, sFID (and
the equivariance metrics of StyleGAN3).

:func:`evaluate` runs a list of named metrics; :mod:`styleforge.metrics.registry` holds the names. Feature
networks live in :mod:`styleforge.feature_nets` and are loaded only when a metric runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate", "list_metrics", "compute_metric", "MetricContext"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from styleforge.metrics.evaluation import evaluate

        return evaluate
    if name in ("list_metrics", "compute_metric", "MetricContext"):
        from styleforge.metrics import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'styleforge.metrics' has no attribute {name!r}")

"""Kernel Inception Distance (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018).

Unbiased MMD^2 with the cubic polynomial kernel on pool3 Inception features, averaged over 100 random subsets
of at most 1000 samples; official names and counts (``kid50k_full``: all real images up to 1M, 50k generated).
"""

from __future__ import annotations

from styleforge.metrics import _features as fx
from styleforge.metrics._stats_math import KID_MAX_SUBSET_SIZE, KID_NUM_SUBSETS, kernel_inception_distance
from styleforge.metrics.registry import MetricContext, register_metric

__all__ = ["compute_kid"]

KID_FULL_MAX_REAL = 1_000_000


def compute_kid(
    ctx: MetricContext,
    num_gen: int,
    max_real: int | None,
    metric: str = "kid",
    num_subsets: int = KID_NUM_SUBSETS,
    max_subset_size: int = KID_MAX_SUBSET_SIZE,
) -> float:
    """KID between the real dataset and ``num_gen`` generated images (``ctx.num_gen`` overrides the count)."""
    net = fx.get_inception(ctx)
    real, data_record = fx.real_stats(ctx, net, ["pool3"], capture_all=True, capture_mean_cov=False, max_items=max_real)
    gen, n_gen = fx.generated_stats(
        ctx, net, ["pool3"], capture_all=True, capture_mean_cov=False, num=fx.num_gen_for(ctx, num_gen)
    )
    value = kernel_inception_distance(
        real["pool3"].get_all(), gen["pool3"].get_all(), num_subsets, max_subset_size, seed=ctx.seed
    )
    fx.record_result(
        ctx,
        metric,
        {
            **net.protocol(),
            **data_record,
            "num_gen": n_gen,
            "features": "pool3",
            "num_subsets": num_subsets,
            "max_subset_size": max_subset_size,
            **fx.context_record(ctx),
        },
    )
    return value


def _register(name: str, num_gen: int, max_real: int | None) -> None:
    def metric_fn(ctx: MetricContext) -> dict[str, float]:
        return {name: compute_kid(ctx, num_gen, max_real, name)}

    metric_fn.__name__ = name
    register_metric(name)(metric_fn)


_register("kid50k_full", 50000, KID_FULL_MAX_REAL)
_register("kid10k_full", 10000, KID_FULL_MAX_REAL)
_register("kid5k_full", 5000, KID_FULL_MAX_REAL)
_register("kid50k", 50000, 50000)

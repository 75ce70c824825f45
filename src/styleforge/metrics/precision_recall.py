"""Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019) in VGG16 fc2 feature space.

Each set's manifold is the union of hyperspheres around its samples with radius the distance to the k-th
nearest neighbour (k = 3). Precision: fraction of generated samples inside the real manifold; recall: fraction
of real samples inside the generated manifold. ``pr50k3_full``: up to 200k real images, 50k generated.
"""

from __future__ import annotations

from styleforge.metrics import _features as fx
from styleforge.metrics._stats_math import PR_BATCH_SIZE, PR_NHOOD_SIZE, precision_recall
from styleforge.metrics.registry import MetricContext, register_metric

__all__ = ["compute_pr"]

PR_FULL_MAX_REAL = 200_000
PR_LEGACY_MAX_REAL = 6250


def compute_pr(
    ctx: MetricContext,
    num_gen: int,
    max_real: int | None,
    nhood_size: int = PR_NHOOD_SIZE,
    metric: str = "pr",
) -> tuple[float, float]:
    """(precision, recall) between the real dataset and ``num_gen`` generated images."""
    net = fx.get_vgg16(ctx)
    real, data_record = fx.real_stats(ctx, net, ["fc2"], capture_all=True, capture_mean_cov=False, max_items=max_real)
    gen, n_gen = fx.generated_stats(
        ctx, net, ["fc2"], capture_all=True, capture_mean_cov=False, num=fx.num_gen_for(ctx, num_gen)
    )
    batch = int(ctx.options.get("pr_batch_size", PR_BATCH_SIZE))
    precision, recall = precision_recall(real["fc2"].get_all(), gen["fc2"].get_all(), nhood_size, batch)
    fx.record_result(
        ctx,
        metric,
        {
            **net.protocol(),
            **data_record,
            "num_gen": n_gen,
            "nhood_size": nhood_size,
            **fx.context_record(ctx),
        },
    )
    return precision, recall


def _register(name: str, num_gen: int, max_real: int | None) -> None:
    def metric_fn(ctx: MetricContext) -> dict[str, float]:
        p, r = compute_pr(ctx, num_gen, max_real, PR_NHOOD_SIZE, name)
        return {f"{name}_precision": p, f"{name}_recall": r}

    metric_fn.__name__ = name
    register_metric(name)(metric_fn)


_register("pr50k3_full", 50000, PR_FULL_MAX_REAL)
_register("pr10k3_full", 10000, PR_FULL_MAX_REAL)
_register("pr50k3", 50000, PR_LEGACY_MAX_REAL)

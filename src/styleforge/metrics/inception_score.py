"""Inception Score (Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016).

``exp(E_x KL(p(y|x) || p(y)))`` over 10 splits of the generated images, with the softmax of the 1008-class
logits computed without the classifier bias, as the official implementation does. Needs Inception weights that
include the classifier (NVIDIA's ``inception-2015-12-05.pt`` or pytorch-fid's file; fid-helper's
``default_1.pt`` has none).
"""

from __future__ import annotations

from styleforge.metrics import _features as fx
from styleforge.metrics._stats_math import IS_NUM_SPLITS, inception_score
from styleforge.metrics.registry import MetricContext, register_metric

__all__ = ["compute_is"]


def compute_is(
    ctx: MetricContext, num_gen: int, num_splits: int = IS_NUM_SPLITS, metric: str = "is"
) -> tuple[float, float]:
    """(mean, std) of the Inception Score of ``num_gen`` generated images (or the second image set)."""
    net = fx.get_inception(ctx)
    gen, n_gen = fx.generated_stats(
        ctx, net, ["probs"], capture_all=True, capture_mean_cov=False, num=fx.num_gen_for(ctx, num_gen)
    )
    mean, std = inception_score(gen["probs"].get_all(), num_splits)
    fx.record_result(
        ctx,
        metric,
        {
            **net.protocol(),
            "num_gen": n_gen,
            "num_splits": num_splits,
            "logits_bias": False,
            **fx.context_record(ctx),
        },
    )
    return mean, std


def _register(name: str, num_gen: int) -> None:
    def metric_fn(ctx: MetricContext) -> dict[str, float]:
        mean, std = compute_is(ctx, num_gen, IS_NUM_SPLITS, name)
        return {f"{name}_mean": mean, f"{name}_std": std}

    metric_fn.__name__ = name
    register_metric(name)(metric_fn)


_register("is50k", 50000)
_register("is10k", 10000)

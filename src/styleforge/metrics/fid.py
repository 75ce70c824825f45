"""Fréchet Inception Distance and its variants: FID, rFID (random Inception), sFID (spatial features).

FID (Heusel et al. 2017): Fréchet distance between Gaussians fitted to the pool3 features of real and generated
images. ``_full`` uses every real image; the plain (legacy) names cap the real images at the generated count.
rFID (used by StyleGAN-XL, Sauer et al. 2022): the same with a randomly initialised Inception (fixed seed), which is
not biased towards ImageNet classes. sFID (Nash et al. 2021): the same on the first 7 channels of the 17x17
``mixed_6/conv`` activations (2023 values), which are sensitive to spatial structure.
"""

from __future__ import annotations

from styleforge.metrics import _features as fx
from styleforge.metrics._stats_math import frechet_distance
from styleforge.metrics.registry import MetricContext, register_metric

__all__ = ["compute_fid"]


def compute_fid(
    ctx: MetricContext, num_gen: int, max_real: int | None, variant: str = "fid", metric: str = "fid"
) -> float:
    """Fréchet distance between real and generated feature statistics.

    Args:
        ctx: metric context (``G`` or ``options['gen_dataset']``, ``dataset``, device, batch size, seed, ...).
        num_gen: number of generated images (``ctx.num_gen`` overrides it).
        max_real: cap on real images (``None``: all of them).
        variant: ``"fid"`` (pool3 of the FID Inception), ``"rfid"`` (pool3 of the random Inception),
            ``"sfid"`` (spatial features of the FID Inception).
        metric: name under which the protocol is recorded.

    ``ctx.options['fid_protocol']``: ``"nvidia"`` (default) or ``"pytorch-fid"`` (that package's resize, input
    scaling and unbiased covariance; give its ``pt_inception-2015-12-05`` weights with ``options['inception']``
    to reproduce its numbers). rFID always follows the NVIDIA protocol.
    """
    net = fx.get_inception(ctx, random_init=(variant == "rfid"))
    head = "spatial" if variant == "sfid" else "pool3"
    real, data_record = fx.real_stats(ctx, net, [head], capture_all=False, capture_mean_cov=True, max_items=max_real)
    gen, n_gen = fx.generated_stats(
        ctx, net, [head], capture_all=False, capture_mean_cov=True, num=fx.num_gen_for(ctx, num_gen)
    )
    protocol = fx.fid_protocol(ctx) if variant != "rfid" else "nvidia"
    unbiased = fx.FID_PROTOCOLS[protocol][2]
    mu_r, sigma_r = real[head].get_mean_cov(unbiased=unbiased)
    mu_g, sigma_g = gen[head].get_mean_cov(unbiased=unbiased)
    value = frechet_distance(mu_g, sigma_g, mu_r, sigma_r)
    fx.record_result(
        ctx,
        metric,
        {**net.protocol(), **data_record, "num_gen": n_gen, "features": head, "fid_protocol": protocol,
         "covariance": "unbiased" if unbiased else "biased", **fx.context_record(ctx)},
    )
    return value


def _register(name: str, num_gen: int, max_real: int | None, variant: str) -> None:
    def metric_fn(ctx: MetricContext) -> dict[str, float]:
        return {name: compute_fid(ctx, num_gen, max_real, variant, name)}

    metric_fn.__name__ = name
    reals = "all" if max_real is None else str(max_real)
    metric_fn.__doc__ = f"{variant.upper()} with {num_gen} generated images and {reals} real images."
    register_metric(name)(metric_fn)


_FULL_COUNTS = {"50k": 50000, "10k": 10000, "5k": 5000, "2k": 2000, "1k": 1000}
for _count, _n in _FULL_COUNTS.items():
    _register(f"fid{_count}_full", _n, None, "fid")
for _count, _n in (("50k", 50000), ("10k", 10000)):
    _register(f"fid{_count}", _n, _n, "fid")  # legacy: real images capped at the generated count
    _register(f"rfid{_count}_full", _n, None, "rfid")
    _register(f"sfid{_count}_full", _n, None, "sfid")

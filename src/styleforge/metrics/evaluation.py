"""One call that runs several named metrics and returns their values with the protocol each one used.

Used by ``styleforge metrics`` and by the training loop (``--metrics``)::

    report = evaluate(G, dataset, ["fid50k_full", "kid50k_full"], num_gen=1000, device="cpu")
    report["results"]          # {"fid50k_full": 12.3, "kid50k_full": 0.004}
    report["metrics"]["fid50k_full"]["protocol"]   # feature net + hash, resize, image counts, seed, ...
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from styleforge.metrics.registry import MetricContext, compute_metric, get_metric
from styleforge.utils.errors import UserInputError

__all__ = ["evaluate", "parse_metric_list", "needs_real_images", "NO_REAL_IMAGE_PREFIXES"]

#: metrics computed from generated images alone: equivariance (EQ-T, EQ-R), Inception Score, path length
NO_REAL_IMAGE_PREFIXES = ("eqt", "eqr", "is", "ppl")


def needs_real_images(name: str) -> bool:
    """Whether the metric ``name`` compares against a real dataset (FID, KID, precision/recall, ...)."""
    return not name.startswith(NO_REAL_IMAGE_PREFIXES)


def parse_metric_list(spec: str | Sequence[str]) -> list[str]:
    """``"fid50k_full,kid50k_full"`` or a list -> validated list of metric names (unknown names raise an error
    that lists the valid ones)."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n for n in names if n]
    if not names:
        raise UserInputError("No metric given; e.g. --metrics fid50k_full,kid50k_full.")
    for n in names:
        get_metric(n)
    return names


def evaluate(
    G: torch.nn.Module | None,
    dataset: Any,
    metrics: str | Sequence[str],
    *,
    num_gen: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    truncation_psi: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    cache: bool = True,
    gen_dataset: Any = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute ``metrics`` for generator ``G`` against the real ``dataset``.

    Args:
        G: generator called as ``G(z, c, truncation_psi=..., noise_mode=...)`` returning ``[N, C, H, W]`` in
            [-1, 1]; ``None`` when comparing two image sets (then give ``gen_dataset``).
        dataset: real images (``styleforge.data.open_dataset`` object).
        metrics: names (``"fid50k_full"``, ``"kid50k_full"``, ``"pr50k3_full"``, ``"is50k"``, ``"ppl2_wend"``,
            ...) as a list or a comma-separated string.
        num_gen: number of generated images for every metric (default: the count in each metric's name).
        device, batch_size, truncation_psi, seed, progress, cache: see :class:`MetricContext`.
        gen_dataset: a second image set taking the place of generated images (folder-vs-folder comparison).
        options: feature-network paths (``inception``, ``vgg16``, ``lpips``), ``noise_mode``, ``rfid_seed``,
        ...

    Returns:
        ``{"results": {key: value}, "metrics": {name: {"results": {...}, "protocol": {...}, "seconds": s}}}``.
    """
    names = parse_metric_list(metrics)
    if G is None and gen_dataset is None:
        raise UserInputError("Nothing to evaluate: give a generator (--network) or a second image set (--folder).")
    if num_gen is not None and num_gen <= 0:
        raise UserInputError(f"--num-gen must be positive, got {num_gen}.")
    if batch_size <= 0:
        raise UserInputError(f"--batch-size must be positive, got {batch_size}.")
    report: dict[str, Any] = {"results": {}, "metrics": {}}
    # Several metrics on the same generated images (e.g. FID and KID): generate and embed them once.
    memo: dict[Any, Any] | None = {} if len(names) > 1 else None
    for name in names:
        records: dict[str, Any] = {}
        opts = {**(options or {}), "records": records}
        if memo is not None:
            opts["feature_memo"] = memo
        if gen_dataset is not None:
            opts["gen_dataset"] = gen_dataset
        ctx = MetricContext(
            G=G,
            dataset=dataset,
            device=device,
            batch_size=batch_size,
            num_gen=num_gen,
            truncation_psi=truncation_psi,
            progress=progress,
            cache=cache,
            seed=seed,
            options=opts,
        )
        start = time.perf_counter()
        values = {k: float(v) for k, v in compute_metric(name, ctx).items()}
        report["results"].update(values)
        report["metrics"][name] = {
            "results": values,
            "protocol": records.get(name, {}),
            "seconds": round(time.perf_counter() - start, 3),
        }
    return report

"""Perceptual path length (Karras et al., "A Style-Based Generator Architecture for GANs", CVPR 2019).

For pairs of latents, the LPIPS distance between images at interpolation points ``t`` and ``t + eps``, divided
by ``eps^2``; the mean after rejecting values below the 1st and above the 99th percentile. ``ppl2_wend`` (the
StyleGAN2 metric): W space, ``t = 0`` (path endpoints), ``eps = 1e-4``, no crop, 50k samples. ``ppl_wend``,
``ppl_zend``, ``ppl_wfull`` and ``ppl_zfull`` crop the central face region as the StyleGAN (FFHQ) protocol did.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from styleforge.metrics import _features as fx
from styleforge.metrics._stats_math import ppl_from_distances
from styleforge.metrics.registry import MetricContext, register_metric
from styleforge.utils.errors import UserInputError

__all__ = ["compute_ppl", "slerp"]

PPL_EPSILON = 1e-4
PPL_MAX_RESOLUTION = 256  # images are box-downsampled to at most this size before LPIPS
PPL_BATCH_SIZE = 2  # pairs per batch in the official metric


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between the directions of ``a`` and ``b`` ``[N, D]`` at ``t`` ``[N, 1]``;
    returns unit vectors (as the official Z-space PPL)."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(dim=-1, keepdim=True)
    angle = t * torch.acos(cos)
    ortho = b - cos * a
    ortho = ortho / ortho.norm(dim=-1, keepdim=True)
    out = a * torch.cos(angle) + ortho * torch.sin(angle)
    return out / out.norm(dim=-1, keepdim=True)


def _prepare(img: torch.Tensor, crop: bool) -> torch.Tensor:
    """Face crop (rows 3/8..7/8, columns 2/8..6/8) if asked, then box-downsample to <= 256 px (range unchanged)."""
    if crop:
        if img.shape[2] != img.shape[3]:
            raise UserInputError("PPL with crop needs square images.")
        c = img.shape[2] // 8
        img = img[:, :, c * 3 : c * 7, c * 2 : c * 6]
    factor = img.shape[2] // PPL_MAX_RESOLUTION
    if factor > 1:
        n, ch, h, w = img.shape
        img = img.reshape(n, ch, h // factor, factor, w // factor, factor).mean(dim=(3, 5))
    return img


def _path_distances(G: Any, lpips: Any, z: torch.Tensor, t: torch.Tensor, c: torch.Tensor, epsilon: float,
                    space: str, crop: bool) -> np.ndarray:
    """``[b]`` squared LPIPS distances / epsilon^2 between the images at ``t`` and ``t + epsilon`` of ``b`` paths
    (``z``: ``[2b, z_dim]``, the two ends of each path)."""
    if space == "w":
        w0, w1 = G.mapping(z, torch.cat([c, c])).chunk(2)
        tt = t[:, :, None]
        ws = torch.cat([w0.lerp(w1, tt), w0.lerp(w1, tt + epsilon)])
    else:
        z0, z1 = z.chunk(2)
        zt = torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + epsilon)])
        ws = G.mapping(zt, torch.cat([c, c]))
    img = _prepare(G.synthesis(ws, noise_mode="const"), crop)
    e0, e1 = lpips.embed(img).chunk(2)
    return ((e0 - e1).square().sum(dim=1) / epsilon**2).double().cpu().numpy()


def compute_ppl(
    ctx: MetricContext,
    num_samples: int,
    epsilon: float = PPL_EPSILON,
    space: str = "w",
    sampling: str = "end",
    crop: bool = False,
    metric: str = "ppl",
) -> float:
    """Perceptual path length of ``ctx.G`` (needs ``G.mapping`` and ``G.synthesis``) with the LPIPS-VGG16
    distance.

    Args:
        num_samples: number of latent pairs (``ctx.num_gen`` overrides it).
        epsilon: step along the path.
        space: ``"w"`` (linear interpolation of ws) or ``"z"`` (spherical interpolation of z).
        sampling: ``"end"`` (t = 0) or ``"full"`` (t ~ U[0, 1)).
        crop: crop the central region of face images.
    """
    from styleforge.feature_nets.vgg16 import load_lpips_vgg16, load_lpips_vgg16_nvidia

    if space not in ("w", "z") or sampling not in ("end", "full"):
        raise UserInputError(f"PPL space must be 'w' or 'z' and sampling 'end' or 'full'; got {space!r}, {sampling!r}.")
    G = ctx.G
    if G is None or not hasattr(G, "mapping") or not hasattr(G, "synthesis"):
        raise UserInputError("PPL needs a style-based generator with .mapping and .synthesis; pass --network.")
    nvidia = fx.nvidia_vgg16_file(ctx)  # NVIDIA's vgg16.pt when present, else torchvision VGG16 + lpips vgg.pth
    if nvidia is not None:
        lpips = load_lpips_vgg16_nvidia(nvidia, device=ctx.device)
    else:
        lpips = load_lpips_vgg16(ctx.options.get("vgg16"), ctx.options.get("lpips"), device=ctx.device)
    n = fx.num_gen_for(ctx, num_samples)
    gen = torch.Generator(device="cpu").manual_seed(ctx.seed)
    labels = fx.label_sampler(G, ctx.dataset, ctx.seed, ctx.device)
    batch = int(ctx.options.get("ppl_batch_size", PPL_BATCH_SIZE))
    # With several processes every one draws every batch's random numbers (so the pairs are those of one
    # process) and embeds only its share, batches rank, rank + num_ranks, ...; the distances are gathered in
    # batch order.
    mine: list[tuple[int, np.ndarray]] = []
    with fx.eval_mode(G), fx.progress_bar(n, "ppl pairs", ctx.progress) as bar, torch.no_grad():
        done = index = 0
        while done < n:
            b = min(batch, n - done)
            t = torch.rand(b, 1, generator=gen) * (1.0 if sampling == "full" else 0.0)
            z = torch.randn(2 * b, G.z_dim, generator=gen)
            c = labels(b)
            if index % ctx.num_ranks == ctx.rank:
                mine.append((index, _path_distances(G, lpips, z.to(ctx.device), t.to(ctx.device), c, epsilon,
                                                    space, crop)))
                bar.update(b * ctx.num_ranks)
            done += b
            index += 1
    if ctx.num_ranks > 1:
        mine = sorted((item for part in ctx.gather(mine) for item in part), key=lambda item: item[0])
    dists = [d for _, d in mine]
    value = ppl_from_distances(np.concatenate(dists))
    fx.record_result(
        ctx,
        metric,
        {
            "feature_net": "lpips_vgg16",
            "weights": lpips.weights_file,
            "weights_format": "nvidia-vgg16.pt" if nvidia is not None else "torchvision+lpips",
            "num_samples": n,
            "epsilon": epsilon,
            "space": space,
            "sampling": sampling,
            "crop": crop,
            "seed": ctx.seed,
            "noise_mode": "const",
        },
    )
    return value


def _register(name: str, space: str, sampling: str, crop: bool) -> None:
    def metric_fn(ctx: MetricContext) -> dict[str, float]:
        return {name: compute_ppl(ctx, 50000, PPL_EPSILON, space, sampling, crop, name)}

    metric_fn.__name__ = name
    register_metric(name)(metric_fn)


_register("ppl2_wend", "w", "end", False)
_register("ppl_wend", "w", "end", True)
_register("ppl_zend", "z", "end", True)
_register("ppl_wfull", "w", "full", True)
_register("ppl_zfull", "z", "full", True)

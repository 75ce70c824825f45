"""Pivotal tuning (Roich et al., "Pivotal Tuning for Latent-based Editing of Real Images", ACM TOG 2022), the
second stage of StyleGAN-XL's inversion.

After projection gives a pivot ``w_p``, the generator itself is fine-tuned so that ``G(w_p)`` matches the target:
Adam (lr 3e-4, betas 0.9/0.999) on all generator parameters for up to 350 steps, loss
``l2_weight * MSE + distance_weight * D(G(w_p), target)`` (MSE on [-1, 1] images; PTI uses LPIPS-AlexNet, here the
projector's distance), stopping early once the perceptual distance is at or below ``stop_distance`` (PTI: LPIPS
0.06). The optional locality regulariser keeps the rest of latent space unchanged: a ``w_z = mapping(z)`` with
truncation 0.5, moved to ``w_r = w_p + alpha (w_z - w_p) / ||w_z - w_p||`` (alpha 30), and
``locality_weight * (MSE + D)`` between the tuned and the original generator's images of ``w_r`` (PTI: 0.1 each).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from styleforge.inversion.distance import PerceptualDistance, psnr
from styleforge.inversion.projector import noise_buffers
from styleforge.utils.errors import UserInputError

__all__ = ["PTIConfig", "PTIResult", "pivotal_tuning"]


@dataclass(frozen=True)
class PTIConfig:
    """Settings of :func:`pivotal_tuning` (defaults: PTI's).

    Attributes:
        num_steps: maximum tuning steps.
        learning_rate: Adam learning rate.
        l2_weight, distance_weight: weights of the pixel MSE and the perceptual distance.
        stop_distance: stop once the distance to the target is at or below this (in the distance's units; PTI's
            0.06 is an LPIPS value); ``None`` = always run ``num_steps``.
        locality_weight: weight of the locality regulariser; 0 = off (PTI's default).
        locality_alpha, locality_psi: distance of the regularisation code from the pivot, and its truncation.
        seed: seed of the regulariser's ``z``.
    """

    num_steps: int = 350
    learning_rate: float = 3e-4
    l2_weight: float = 1.0
    distance_weight: float = 1.0
    stop_distance: float | None = 0.06
    locality_weight: float = 0.0
    locality_alpha: float = 30.0
    locality_psi: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise UserInputError(f"PTI needs at least 1 step, got {self.num_steps}.")


@dataclass
class PTIResult:
    """Attributes: ``G`` the tuned generator (a copy); ``before``/``after`` ``[1, C, H, W]`` images of the pivot
    before and after tuning; ``distance_before``/``after``, ``psnr_before``/``after`` (floats); ``steps`` run."""

    G: torch.nn.Module
    before: torch.Tensor
    after: torch.Tensor
    distance_before: float
    distance_after: float
    psnr_before: float
    psnr_after: float
    steps: int


def pivotal_tuning(
    G: torch.nn.Module,
    ws: torch.Tensor,
    target: torch.Tensor,
    distance: PerceptualDistance,
    config: PTIConfig | None = None,
    noise: dict[str, torch.Tensor] | None = None,
    c: torch.Tensor | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> PTIResult:
    """Tune a copy of ``G`` so that ``G.synthesis(ws)`` reproduces ``target``.

    Args:
        G: the generator (not modified).
        ws: the pivot ``[1, num_ws, w_dim]``.
        target: ``[1, C, H, W]`` in [-1, 1].
        noise: the projection's noise maps for this target (module name -> ``[1, 1, H, W]``); they become the
            tuned generator's ``noise_const``, so that ``noise_mode="const"`` reproduces the reconstruction.
        c: ``[1, c_dim]`` label of a conditional generator, for the regulariser's ``w_z``.
        progress: called with ``(step, distance)`` after every step.
    """
    cfg = config or PTIConfig()
    if ws.ndim != 3 or ws.shape[0] != 1 or target.ndim != 4 or target.shape[0] != 1:
        raise UserInputError(f"PTI tunes one target at a time: ws [1, num_ws, w_dim] and target [1, C, H, W], got "
                             f"{list(ws.shape)} and {list(target.shape)}.")
    device = next(iter(G.parameters())).device
    G_orig = copy.deepcopy(G).eval().requires_grad_(False)
    if noise:
        mods = noise_buffers(G_orig)
        for name, v in noise.items():
            mods[name].noise_const = v.detach().to(device).reshape(mods[name].noise_const.shape[-2:]).clone()
    G_tuned = copy.deepcopy(G_orig).requires_grad_(True)
    ws = ws.to(device).detach()
    target = target.to(device, torch.float32)
    params = [p for p in G_tuned.parameters() if p.is_floating_point()]
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, betas=(0.9, 0.999))
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    with torch.no_grad():
        target_embed = distance.embed(target)
        before = G_orig.synthesis(ws, noise_mode="const")
        d_before = float((distance.embed(before) - target_embed).square().sum())

    steps = 0
    for step in range(cfg.num_steps):
        img = G_tuned.synthesis(ws, noise_mode="const")
        dist = (distance.embed(img) - target_embed).square().sum()
        if cfg.stop_distance is not None and float(dist.detach()) <= cfg.stop_distance:
            break
        loss = cfg.l2_weight * (img - target).square().mean() + cfg.distance_weight * dist
        if cfg.locality_weight > 0:
            z = torch.randn([1, G.z_dim], generator=gen).to(device)
            with torch.no_grad():
                w_z = G_orig.mapping(z, c, truncation_psi=cfg.locality_psi)
                direction = w_z - ws
                w_r = ws + cfg.locality_alpha * direction / direction.norm()
                ref = G_orig.synthesis(w_r, noise_mode="const")
            out = G_tuned.synthesis(w_r, noise_mode="const")
            loss = loss + cfg.locality_weight * ((out - ref).square().mean() + distance(out, ref).sum())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps = step + 1
        if progress is not None:
            progress(step, float(dist.detach()))

    G_tuned.eval().requires_grad_(False)
    with torch.no_grad():
        after = G_tuned.synthesis(ws, noise_mode="const")
        d_after = float((distance.embed(after) - target_embed).square().sum())
        return PTIResult(
            G=G_tuned,
            before=before.cpu(),
            after=after.cpu(),
            distance_before=d_before,
            distance_after=d_after,
            psnr_before=float(psnr(before, target)),
            psnr_after=float(psnr(after, target)),
            steps=steps,
        )

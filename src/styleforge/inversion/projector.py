"""Latent projection: find the ``w`` (or per-layer ``ws``) whose image matches a target.

The official StyleGAN2 projector (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR
2020, sec. 5; the stylegan2-ada-pytorch ``projector.py`` settings):

- start at ``w_avg``, the mean of ``mapping(z)`` over 10,000 ``z`` (seed 123), and measure
  ``w_std = sqrt(sum ||w - w_avg||^2 / N)``;
- Adam (betas 0.9, 0.999) for ``T`` steps (1000); at ``t = step / T`` the learning rate is
  ``0.1 * min(1, t / 0.05) * (0.5 - 0.5 cos(pi * min(1, (1 - t) / 0.25)))`` (ramp-up, then cosine ramp-down);
- Gaussian noise of scale ``w_std * 0.05 * max(0, 1 - t / 0.75)^2`` is added to ``w`` at each step;
- loss = perceptual distance to the target + ``1e5 *`` the noise regulariser: for each StyleGAN2 noise map (which
  are optimised too, starting from N(0, 1), and re-normalised to zero mean / unit variance after every step) the
  squared mean of its products with itself shifted by one pixel horizontally and vertically, summed over a
  pyramid of 2x2 average-poolings down to 8 px;
- in W the one ``w`` is repeated for every layer; W+ (``space="w+"``) optimises one ``w`` per layer.

StyleGAN3 and StyleGAN-XL have no noise inputs, so only ``w`` is optimised for them. Several targets are projected
in one batch, independently: each has its own ``w``, noise maps, regulariser and loss term (the loss is a sum over
targets, so a target's gradient does not depend on the others).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from styleforge.inversion.distance import PerceptualDistance, psnr
from styleforge.utils.errors import UserInputError

__all__ = [
    "ProjectorConfig",
    "ProjectionResult",
    "project",
    "learning_rate",
    "w_noise_scale",
    "noise_regularization",
    "w_statistics",
    "noise_buffers",
    "render",
    "with_noise",
    "check_projectable",
    "SPACES",
]

SPACES = ("w", "w+")
NOISE_INITS = ("random", "const")
W_AVG_SEED = 123  # seed of the z samples that give w_avg and w_std
NOISE_REG_MIN_SIZE = 8  # the pyramid of the noise regulariser stops at this size
ADAM_BETAS = (0.9, 0.999)


@dataclass(frozen=True)
class ProjectorConfig:
    """Settings of :func:`project` (defaults: the official projector).

    Attributes:
        num_steps: optimisation steps ``T``.
        space: ``"w"`` (one w for all layers) or ``"w+"`` (one per layer).
        initial_learning_rate: the peak learning rate.
        lr_rampup_length, lr_rampdown_length: fractions of ``T`` for the linear ramp-up and cosine ramp-down.
        initial_noise_factor: scale of the noise added to ``w``, relative to ``w_std``.
        noise_ramp_length: fraction of ``T`` after which no noise is added (quadratic decay).
        regularize_noise_weight: weight of the noise-map regulariser.
        w_avg_samples: ``z`` samples for ``w_avg`` and ``w_std``.
        mse_weight: weight of a pixel MSE term (on [-1, 1] images) added to the perceptual distance; 0 = off.
        optimize_noise: optimise the StyleGAN2 noise maps (else they stay at the network's ``noise_const``).
        noise_init: start of the optimised noise maps: ``"random"`` (N(0, 1), the official projector's start,
            the default) or ``"const"`` (the network's stored ``noise_const``, the noise ``generate`` uses by
            default; an image generated with the stored noise is then reachable exactly: on builtin:emoji, whose
            noise changes a picture by ~25 dB PSNR, random starts end near 27.6 dB and const starts pass 30 dB in
            500 W+ steps); for real images the two starts behave alike.
        seed: seed of the noise maps' start and of the noise added to ``w``.
        num_frames: ``ws`` snapshots kept for the progress video (evenly spaced; the last is the result).
    """

    num_steps: int = 1000
    space: str = "w"
    initial_learning_rate: float = 0.1
    lr_rampup_length: float = 0.05
    lr_rampdown_length: float = 0.25
    initial_noise_factor: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    w_avg_samples: int = 10000
    mse_weight: float = 0.0
    optimize_noise: bool = True
    noise_init: str = "random"
    seed: int = 0
    num_frames: int = 100

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise UserInputError(f"space must be one of {', '.join(SPACES)}, got {self.space!r}.")
        if self.num_steps < 1:
            raise UserInputError(f"The number of steps must be at least 1, got {self.num_steps}.")
        if self.w_avg_samples < 2:
            raise UserInputError(f"w_avg_samples must be at least 2, got {self.w_avg_samples}.")
        if self.noise_init not in NOISE_INITS:
            raise UserInputError(f"noise_init must be one of {', '.join(NOISE_INITS)}, got {self.noise_init!r}.")
        if self.mse_weight < 0:
            raise UserInputError(f"mse_weight must be >= 0, got {self.mse_weight}.")


@dataclass
class ProjectionResult:
    """What :func:`project` found, for ``N`` targets.

    Attributes:
        ws: ``[N, num_ws, w_dim]`` final latents (in W all rows of a target are equal).
        images: ``[N, C, H, W]`` their images (with the optimised noise maps), in [-1, 1] (not clamped).
        noise: the optimised noise maps, synthesis-module name -> ``[N, 1, H, W]`` (empty without noise inputs).
        distance: ``[N]`` final perceptual distance to the target.
        psnr: ``[N]`` final PSNR in dB.
        frames: ``(step, ws [N, num_ws, w_dim])`` snapshots for the progress video, the last one being ``ws``.
        history: per-step mean distance over the targets.
        distance_name: which distance was optimised.
    """

    ws: torch.Tensor
    images: torch.Tensor
    noise: dict[str, torch.Tensor]
    distance: torch.Tensor
    psnr: torch.Tensor
    frames: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    history: list[float] = field(default_factory=list)
    distance_name: str = ""


def learning_rate(t: float, cfg: ProjectorConfig) -> float:
    """The official schedule at ``t = step / num_steps``: linear ramp-up, cosine ramp-down."""
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown_length)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / cfg.lr_rampup_length)
    return cfg.initial_learning_rate * ramp


def w_noise_scale(t: float, cfg: ProjectorConfig) -> float:
    """Scale of the noise added to ``w`` at ``t``, relative to ``w_std``: ``f * max(0, 1 - t / ramp)^2``."""
    return cfg.initial_noise_factor * max(0.0, 1.0 - t / cfg.noise_ramp_length) ** 2


def noise_regularization(noise: torch.Tensor) -> torch.Tensor:
    """The official noise regulariser per sample ``[N]`` of noise maps ``[N, 1, H, W]``: squared mean
    autocorrelation at a one-pixel shift (rolled, both axes), summed over 2x2 average-pool levels down to 8 px."""
    total = noise.new_zeros(noise.shape[0])
    v = noise
    while True:
        total = total + (v * torch.roll(v, shifts=1, dims=3)).mean(dim=(1, 2, 3)).square()
        total = total + (v * torch.roll(v, shifts=1, dims=2)).mean(dim=(1, 2, 3)).square()
        if v.shape[2] <= NOISE_REG_MIN_SIZE:
            return total
        v = F.avg_pool2d(v, kernel_size=2)


def check_projectable(G: torch.nn.Module) -> None:
    """Raise a clear error for generators without a mapping/synthesis split (PGGAN)."""
    for attr in ("mapping", "synthesis", "num_ws", "w_dim", "z_dim"):
        if not hasattr(G, attr):
            raise UserInputError(
                f"{type(G).__name__} has no {attr!r}: projection, editing and style mixing need a style-based "
                "generator (StyleGAN2, StyleGAN3 or StyleGAN-XL)."
            )


@torch.no_grad()
def w_statistics(
    G: torch.nn.Module, c: torch.Tensor | None, num_samples: int, seed: int = W_AVG_SEED, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w_avg`` ``[1, w_dim]`` and ``w_std`` (scalar tensor) from ``num_samples`` ``z`` drawn with
    ``RandomState(seed)``; ``c`` ``[1, c_dim]`` is the class of a conditional generator (repeated)."""
    device = next(iter(G.parameters())).device
    z = torch.from_numpy(np.random.RandomState(seed).randn(num_samples, G.z_dim)).to(device, torch.float32)
    ws = []
    for start in range(0, num_samples, batch_size):
        zb = z[start : start + batch_size]
        cb = None if c is None or c.shape[1] == 0 else c.expand(len(zb), -1)
        ws.append(G.mapping(zb, cb)[:, 0].to(torch.float64))
    w = torch.cat(ws)
    w_avg = w.mean(dim=0, keepdim=True)
    w_std = ((w - w_avg).square().sum() / num_samples).sqrt()
    return w_avg.float(), w_std.float()


def noise_buffers(G: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The synthesis modules holding a ``noise_const`` buffer (StyleGAN2 layers), by module name."""
    return {name: m for name, m in G.synthesis.named_modules() if "noise_const" in m._buffers}


def _labels_for(G: torch.nn.Module, classes: list[int | None], device: torch.device) -> torch.Tensor:
    c_dim = int(getattr(G, "c_dim", 0))
    c = torch.zeros([len(classes), c_dim], device=device)
    for i, k in enumerate(classes):
        if c_dim == 0:
            if k is not None:
                raise UserInputError(f"This network is unconditional; class {k} was given (leave out --class).")
            continue
        if k is None:
            raise UserInputError(f"This network is conditional with {c_dim} classes; choose one with --class.")
        if not 0 <= k < c_dim:
            raise UserInputError(f"Class {k} is out of range; this network has classes 0 to {c_dim - 1}.")
        c[i, k] = 1
    return c


def project(
    G: torch.nn.Module,
    targets: torch.Tensor,
    distance: PerceptualDistance,
    config: ProjectorConfig | None = None,
    classes: list[int | None] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> ProjectionResult:
    """Project ``targets`` ``[N, C, H, W]`` (in [-1, 1], at the generator's resolution) into ``G``'s latent space.

    Args:
        G: a style-based generator (``mapping``, ``synthesis``); it is not modified (noise maps are optimised
            on a copy).
        distance: the perceptual distance to minimise.
        config: projector settings.
        classes: the class of each target for a conditional ``G`` (``None`` entries for unconditional ones).
        progress: called after every step with ``(step, mean distance)``.
    """
    cfg = config or ProjectorConfig()
    check_projectable(G)
    from styleforge.models.base import image_size

    width, height = image_size(G)
    if targets.ndim != 4 or targets.shape[1:] != (G.img_channels, height, width):
        raise UserInputError(f"targets must be [N, {G.img_channels}, {height}, {width}], got {list(targets.shape)}")
    n = targets.shape[0]
    device = next(iter(G.parameters())).device
    G = copy.deepcopy(G).eval().requires_grad_(False)
    targets = targets.to(device, torch.float32)
    classes = classes if classes is not None else [None] * n
    if len(classes) != n:
        raise UserInputError(f"{len(classes)} classes for {n} targets.")
    c = _labels_for(G, classes, device)

    stats = {}
    for k in dict.fromkeys(classes):
        stats[k] = w_statistics(G, c[classes.index(k)][None], cfg.w_avg_samples)
    w_avg = torch.cat([stats[k][0] for k in classes])[:, None, :]  # [N, 1, w_dim]
    w_std = torch.stack([stats[k][1] for k in classes]).view(n, 1, 1)
    rows = G.num_ws if cfg.space == "w+" else 1
    w_opt = w_avg.repeat(1, rows, 1).clone().requires_grad_(True)

    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    noise_mods = noise_buffers(G) if cfg.optimize_noise else {}
    noise = {}
    for name, m in noise_mods.items():
        h, w = m.noise_const.shape[-2:]
        if cfg.noise_init == "const":
            buf = m.noise_const.detach().reshape(1, 1, h, w).repeat(n, 1, 1, 1).clone()
        else:
            buf = torch.randn([n, 1, h, w], generator=gen).to(device)
        buf.requires_grad_(True)
        m.noise_const = buf  # the layer broadcasts [N, 1, H, W] noise over channels
        noise[name] = buf
    optimizer = torch.optim.Adam([w_opt, *noise.values()], betas=ADAM_BETAS, lr=cfg.initial_learning_rate)

    with torch.no_grad():
        target_embed = distance.embed(targets)
    frame_steps = set(np.linspace(0, cfg.num_steps - 1, max(1, min(cfg.num_frames, cfg.num_steps))).round().astype(int))
    frames: list[tuple[int, torch.Tensor]] = []
    history: list[float] = []

    def full_ws(w: torch.Tensor) -> torch.Tensor:
        return w if w.shape[1] == G.num_ws else w.repeat(1, G.num_ws, 1)

    for step in range(cfg.num_steps):
        t = step / cfg.num_steps
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(t, cfg)
        w_noise = torch.randn(w_opt.shape, generator=gen).to(device) * (w_std * w_noise_scale(t, cfg))
        images = G.synthesis(full_ws(w_opt + w_noise), noise_mode="const")
        dist = (distance.embed(images) - target_embed).square().sum(dim=1)  # [N]
        loss = dist.sum()
        if noise:
            reg = sum(noise_regularization(v) for v in noise.values())
            loss = loss + cfg.regularize_noise_weight * reg.sum()
        if cfg.mse_weight > 0:
            loss = loss + cfg.mse_weight * (images - targets).square().flatten(1).mean(dim=1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for v in noise.values():
                v -= v.mean(dim=(1, 2, 3), keepdim=True)
                v *= v.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
        history.append(float(dist.detach().mean()))
        if step in frame_steps:
            frames.append((step, full_ws(w_opt.detach()).clone()))
        if progress is not None:
            progress(step, history[-1])

    with torch.no_grad():
        ws = full_ws(w_opt.detach()).clone()
        images = G.synthesis(ws, noise_mode="const")
        final = (distance.embed(images) - target_embed).square().sum(dim=1)
        frames[-1] = (cfg.num_steps - 1, ws)
        return ProjectionResult(
            ws=ws.cpu(),
            images=images.cpu(),
            noise={k: v.detach().cpu() for k, v in noise.items()},
            distance=final.cpu(),
            psnr=psnr(images, targets).cpu(),
            frames=[(s, f.cpu()) for s, f in frames],
            history=history,
            distance_name=distance.name,
        )


def with_noise(G: torch.nn.Module, noise: dict[str, torch.Tensor] | None) -> torch.nn.Module:
    """A copy of ``G`` whose ``noise_const`` buffers are the given maps (``[N, 1, H, W]`` per module name, from a
    :class:`ProjectionResult`); ``G`` itself when ``noise`` is empty."""
    if not noise:
        return G
    device = next(iter(G.parameters())).device
    G = copy.deepcopy(G)
    mods = noise_buffers(G)
    for name, v in noise.items():
        mods[name].noise_const = v.to(device)
    return G


def render(G: torch.nn.Module, ws: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Images ``[N, C, H, W]`` of ``ws`` ``[N, num_ws, w_dim]`` with per-sample noise maps from a
    :class:`ProjectionResult` (``None`` or empty: the network's own ``noise_const``)."""
    G = with_noise(G, noise)
    device = next(iter(G.parameters())).device
    with torch.no_grad():
        return G.synthesis(ws.to(device), noise_mode="const").cpu()

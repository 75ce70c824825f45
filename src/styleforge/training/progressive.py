"""The PGGAN recipe: progressive growing (Karras et al. 2018, section 2 and appendix A.1) on the shared engine.

``styleforge train --cfg pggan|pggan-tiny`` runs it through :func:`styleforge.training.loop.train`; the engine
(:mod:`styleforge.training.engine`) owns the run directory, resume, ticks, snapshots, metrics and the
minibatch/round/process split, so every common flag (``--batch``, ``--batch-gpu``, ``--snap``, ``--tick``,
``--metrics``, ``--glr/--dlr``, ``--mirror``, ``--resolution``, ``--skip-bad``, torchrun) works as for StyleGAN.

Training, as in the paper:

- Schedule (:class:`~styleforge.training.config.GrowthSchedule`): train at ``4x4`` for ``stabilize_kimg``
  thousand real images, then for every further resolution fade the new block in over ``fade_kimg`` thousand
  images (``alpha`` rising linearly from 0 to 1) and stabilise it for ``stabilize_kimg``. Minibatch size per
  resolution is part of the schedule (``--batch`` makes it one size). ``growing=False`` (``--no-growing``) trains
  the same networks at the final resolution from the start: the paper's comparison.
- Real images are downsampled (box filter) to the current resolution and, during a fade-in, blended with their
  ``2x`` downsampled-then-upsampled version by the same ``alpha``, so they match what the faded G can produce.
- Loss: WGAN-GP (Gulrajani et al. 2017) with ``lambda = 10`` and the drift term ``epsilon_drift * E[D(x)^2]``,
  ``epsilon_drift = 0.001``; for conditional data an auxiliary classifier cross-entropy on reals and fakes.
- Adam with ``lr = 0.001, beta1 = 0, beta2 = 0.99, eps = 1e-8``; one D step then one G step per minibatch; the
  moments are cleared when a new resolution starts fading in.
- ``G_ema``: exponential moving average of G's weights with ``beta = 0.999`` per step (paper appendix A.1;
  the ``pggan-tiny`` preset uses 0.99 because its phases are about 100 times shorter).

The stage lives in the networks' buffers, so a snapshot is a plain module; a sample grid is written at the end
of every resolution (``fakes_res{R}.png``, nearest-upsampled to the final size).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.data import ImageDataset
from styleforge.models.pggan import PGGANDiscriminator, PGGANGenerator, downsample_box, upsample_nearest
from styleforge.models.registry import create_model, get_preset
from styleforge.training.config import (
    GrowthSchedule,
    ProgressiveConfig,
    TrainConfig,
    WGANGPConfig,
    progressive_phases,
    progressive_total_images,
)
from styleforge.training.distributed import DistContext
from styleforge.training.ema import update_ema
from styleforge.training.engine import Chunk, Minibatch, Phase
from styleforge.training.stylegan import copy_networks_from, make_optimizer, model_overrides
from styleforge.utils.errors import UserInputError

__all__ = [
    "GrowthSchedule",
    "WGANGPConfig",
    "ProgressiveConfig",
    "PGGANRecipe",
    "Stage",
    "stage_at",
    "total_images",
    "prepare_reals",
    "wgan_gp_losses",
    "generator_loss",
    "update_ema",
]

#: uint8 [0, 255] -> [-1, 1]: x / 127.5 - 1
PIXEL_SCALE = 127.5


def _phase_lengths(schedule: GrowthSchedule, final_resolution: int) -> list[tuple[int, bool, int]]:
    if not schedule.growing:
        return [(final_resolution, False, progressive_total_images(schedule, final_resolution))]
    return progressive_phases(schedule, final_resolution)


def total_images(schedule: GrowthSchedule, final_resolution: int) -> int:
    """Images of the whole schedule: the end of the last stabilisation phase (the same without growing)."""
    return progressive_total_images(schedule, final_resolution)


@dataclass(frozen=True)
class Stage:
    """Where training is at a given image count."""

    resolution: int  # current resolution R
    alpha: float  # fade-in weight of the R block (1 outside fade-in phases)
    phase: int  # 0 = stabilise 4x4, then (fade R, stabilise R) pairs: 2k-1 fades in, 2k stabilises
    fading: bool


def stage_at(nimg: int, schedule: GrowthSchedule, final_resolution: int) -> Stage:
    """The stage after ``nimg`` real images; during a fade ``alpha = (nimg - fade_start) / fade_images``.

    Beyond the last phase training stays at the final resolution with ``alpha = 1``.
    """
    start = 0
    phases = _phase_lengths(schedule, final_resolution)
    for index, (res, fading, length) in enumerate(phases):
        if nimg < start + length:
            alpha = (nimg - start) / length if fading else 1.0
            return Stage(res, float(alpha), index, fading)
        start += length
    return Stage(final_resolution, 1.0, len(phases), False)


# ------------------------------------------------------------------------------------------------------------
# Pieces of one training step (pure functions, reusable and unit-tested)


def prepare_reals(images: torch.Tensor, resolution: int, alpha: float) -> torch.Tensor:
    """Real images for the current stage (paper section 2: the reals fade like the generator).

    Args:
        images: uint8 or float ``[N, C, H, W]``; uint8 in ``[0, 255]`` is mapped to ``[-1, 1]``.
        resolution: current resolution ``R`` (``H`` must be ``R`` times a power of two).
        alpha: fade-in weight; below 1 the result is ``lerp(upsample(downsample(x_R)), x_R, alpha)``.

    Returns:
        float32 ``[N, C, R, R]`` in ``[-1, 1]``.
    """
    x = images.to(torch.float32)
    if images.dtype == torch.uint8:
        x = x / PIXEL_SCALE - 1.0
    factor = x.shape[-1] // resolution
    if factor * resolution != x.shape[-1] or factor & (factor - 1):
        raise UserInputError(f"images of size {x.shape[-1]} cannot be reduced to {resolution} by halving.")
    x = downsample_box(x, factor)
    if alpha < 1.0:
        x = torch.lerp(upsample_nearest(downsample_box(x)), x, alpha)
    return x


def _label_loss(logits: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the auxiliary classifier against one-hot (or soft) labels ``c``, per sample."""
    return -(c * F.log_softmax(logits, dim=1)).sum(dim=1)


def wgan_gp_losses(
    G: PGGANGenerator,
    D: PGGANDiscriminator,
    reals: torch.Tensor,
    real_c: torch.Tensor,
    z: torch.Tensor,
    fake_c: torch.Tensor,
    mix: torch.Tensor,
    loss: WGANGPConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Discriminator loss of one chunk (WGAN-GP + drift, + AC loss when conditional), per sample.

    ``L_D = E[D(G(z))] - E[D(x)] + lambda * E[((|grad D(x_hat)| - gamma) / gamma)^2] + eps_drift * E[D(x)^2]``
    with ``x_hat = lerp(x, G(z), mix)``, ``mix ~ U[0, 1]`` per sample (``[N, 1, 1, 1]``). Returns the loss of
    each sample ``[N]`` (its mean is ``L_D``) and the sums of the logged values (tensors on the device).
    """
    conditional = D.c_dim > 0
    with torch.no_grad():
        fakes = G(z, fake_c if conditional else None)
    real_scores, real_logits = D(reals, real_c, return_label_logits=True)
    fake_scores, fake_logits = D(fakes, fake_c, return_label_logits=True)
    mixed = torch.lerp(reals, fakes, mix).requires_grad_(True)
    mixed_scores = D(mixed, real_c)
    (grad,) = torch.autograd.grad(mixed_scores.sum(), mixed, create_graph=True)
    grad_norm = grad.flatten(1).norm(dim=1)
    penalty = ((grad_norm - loss.gp_target) / loss.gp_target).square()
    drift = real_scores.square()[:, 0]
    total = fake_scores[:, 0] - real_scores[:, 0] + loss.gp_weight * penalty + loss.drift_weight * drift
    if conditional:
        labels = _label_loss(real_logits, real_c) + _label_loss(fake_logits, fake_c)
        total = total + loss.label_weight * labels
    stats = {
        "scores/real": real_scores.detach().sum(),
        "scores/fake": fake_scores.detach().sum(),
        "scores/grad_norm": grad_norm.detach().sum(),
    }
    return total, stats


def generator_loss(
    G: PGGANGenerator, D: PGGANDiscriminator, z: torch.Tensor, c: torch.Tensor, loss: WGANGPConfig
) -> torch.Tensor:
    """``L_G = -E[D(G(z))]`` (+ the AC loss on fakes when conditional), per sample ``[N]``."""
    conditional = D.c_dim > 0
    fakes = G(z, c if conditional else None)
    scores, logits = D(fakes, c, return_label_logits=True)
    total = -scores[:, 0]
    if conditional:
        total = total + loss.label_weight * _label_loss(logits, c)
    return total


class _FullResolution(nn.Module):
    """G_ema at its stage, upsampled to the final resolution, with the generator call convention of the metrics."""

    def __init__(self, G: PGGANGenerator) -> None:
        super().__init__()
        self.G = G
        self.z_dim, self.c_dim = G.z_dim, G.c_dim
        self.img_resolution, self.img_channels = G.img_resolution, G.img_channels

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        return self.G(z, c if self.c_dim > 0 else None, full_resolution=True)


class PGGANRecipe:
    """G, D, G_ema and their Adams, growing with the schedule; see the module docstring."""

    kind = "pggan"

    def __init__(self, cfg: TrainConfig, ds: ImageDataset, dev: torch.device) -> None:
        assert cfg.progressive is not None
        self.cfg, self.recipe = cfg, cfg.progressive
        preset = get_preset(cfg.model)
        if preset.G_class is not PGGANGenerator:
            raise UserInputError(f"--cfg {cfg.cfg} needs a PGGAN model; {cfg.model!r} is {preset.G_class.__name__}.")
        cuda = dev.type == "cuda"
        self.G = create_model(cfg.model, "G", **model_overrides(cfg, "G", ds, cuda)).to(dev).train()
        self.D = create_model(cfg.model, "D", **model_overrides(cfg, "D", ds, cuda)).to(dev).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.final_resolution = self.G.img_resolution
        self.last_phase = -1
        self._new_optimizers()

    def _new_optimizers(self) -> None:
        cfg = self.cfg
        self.opt_G = make_optimizer(list(self.G.parameters()), cfg.g_opt.lr, cfg.g_opt.betas, cfg.g_opt.eps, 0)
        self.opt_D = make_optimizer(list(self.D.parameters()), cfg.d_opt.lr, cfg.d_opt.betas, cfg.d_opt.eps, 0)
        self.phases = [Phase("Dmain", self.D, self.opt_D, 1, 2, ("Dmain",)),
                       Phase("Gmain", self.G, self.opt_G, 1, 0, ("Gmain",), needs_reals=False)]

    def stage(self, nimg: int) -> Stage:
        return stage_at(nimg, self.recipe.schedule, self.final_resolution)

    # -- the engine's hooks --

    def minibatch_size(self, cur_nimg: int) -> int:
        return self.recipe.schedule.batch_size(self.stage(cur_nimg).resolution)

    def begin_minibatch(self, mb: Minibatch) -> list[str]:
        stage = self.stage(mb.cur_nimg)
        lines = []
        if stage.phase != self.last_phase:
            if stage.fading and self.recipe.reset_optimizer_on_grow and self.last_phase >= 0:
                self._new_optimizers()
            what = "fade in" if stage.fading else "stabilise"
            lines.append(f"phase {stage.phase}: {what} {stage.resolution}px at {mb.cur_nimg} images")
            self.last_phase = stage.phase
        for net in (self.G, self.D, self.G_ema):
            net.set_stage(stage.resolution, stage.alpha)
        self._stage = stage
        return lines

    def accumulate(self, loss: str, chunk: Chunk, mb: Minibatch, gain: int) -> dict[str, torch.Tensor]:
        wgan, n = self.recipe.wgan, chunk.gen_z.shape[0]
        count = torch.full([], float(n), device=chunk.gen_z.device)
        if loss == "Dmain":
            reals = prepare_reals(chunk.real_img, self._stage.resolution, self._stage.alpha)
            mix = torch.rand(n, 1, 1, 1, device=reals.device)
            per_sample, stats = wgan_gp_losses(self.G, self.D, reals, chunk.real_c, chunk.gen_z, chunk.gen_c, mix, wgan)
            (per_sample.sum() / mb.batch).backward()
            return {"loss/D": per_sample.detach().sum(), "count/D": count, **stats,
                    **{f"count/{k}": count for k in stats}}
        per_sample = generator_loss(self.G, self.D, chunk.gen_z, chunk.gen_c, wgan)
        (per_sample.sum() / mb.batch).backward()
        return {"loss/G": per_sample.detach().sum(), "count/G": count}

    def finish_phase(self, phase: Phase, dist_ctx: DistContext) -> None:
        pass

    def end_minibatch(self, mb: Minibatch, dist_ctx: DistContext) -> None:
        update_ema(self.G_ema, self.G, self.recipe.ema_beta)

    def milestone(self, before: int, after: int) -> str | None:
        """``res{R}`` when a stabilisation phase (a finished resolution) ends in this minibatch."""
        a, b = self.stage(before), self.stage(after)
        return f"res{a.resolution}" if a.phase != b.phase and not a.fading else None

    def tick_values(self) -> dict[str, float]:
        return {"resolution": float(self.G.current_resolution), "alpha": float(self.G.alpha)}

    def state_dict(self) -> dict[str, Any]:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "last_phase": self.last_phase}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("G", "D", "G_ema"):
            getattr(self, name).load_state_dict(state[name])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.last_phase = int(state["last_phase"])

    def load_weights(self, path: str) -> None:
        copy_networks_from(path, {"G": self.G, "D": self.D, "G_ema": self.G_ema})

    def render(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.G_ema(z, c if self.G.c_dim > 0 else None, full_resolution=True)

    def metric_generator(self) -> nn.Module:
        return _FullResolution(self.G_ema)

    def snapshot_extra(self) -> dict[str, Any]:
        return {"family": "pggan", "stage_resolution": self.G.current_resolution, "stage_alpha": self.G.alpha}

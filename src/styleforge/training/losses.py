"""The StyleGAN2/3 losses: non-saturating logistic loss, lazy R1, path-length regularisation, style mixing,
and the StyleGAN3-R blur of D's inputs.

One call of :meth:`StyleGANLoss.accumulate` runs one phase on one chunk of the minibatch and calls
``backward``; gradients accumulate over the chunks of all rounds and processes. Every loss is a *sum* over the
chunk divided by ``denom`` (the number of samples the phase sees in the whole minibatch), so the summed gradient
is the minibatch mean no matter how the minibatch is split over rounds and processes.

Phases (StyleGAN2, section 3.1 and appendix B):

- ``Gmain``: ``softplus(-D(G(z)))``.
- ``Greg``: path-length penalty ``w_pl * (||J_w^T y||_2 - a)^2`` with ``y ~ N(0, I) / sqrt(H W)`` and ``a`` the
  running mean of the lengths, times the interval (lazy). Official formulation (``pl_mean_update='official'``,
  the default): each chunk first moves ``a`` toward the mean of its own lengths, ``a <- a + decay * (mean - a)``,
  and its penalty uses that updated ``a``. ``'after_minibatch'``: ``a`` moves once per phase toward the mean over
  the whole minibatch (all processes), after the penalty used the previous value, so that N processes give
  bit-identical results to one.
- ``Dmain``: ``softplus(D(G(z))) + softplus(-D(x))``.
- ``Dreg``: ``gamma / 2 * ||grad_x D(x)||^2`` on real images, times the interval (lazy).

StyleGAN3-R blurs every image D sees with the official kernel ``f(x) = 2^(-(x / sigma)^2)`` over ``|x| <= 3
sigma`` (normalised, zero padding), sigma fading linearly from ``blur_init_sigma`` to 0 over ``blur_fade_kimg``.

Statistics are returned as tensors on the device (no host synchronisation in the per-minibatch path).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.ops.upfirdn2d import filter2d
from styleforge.training.augment import AdaController, AugmentPipe
from styleforge.training.config import LossConfig

__all__ = ["StyleGANLoss", "gaussian_blur", "phase_denominator", "PHASES"]

#: The four phases of one training iteration, in order.
PHASES = ("Gmain", "Greg", "Dmain", "Dreg")
#: The blur kernel extends this many sigmas each side.
BLUR_SIGMAS = 3


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """The official StyleGAN3-R blur: separable ``2^(-(x / sigma)^2)``, ``|x| <= floor(3 sigma)``, normalised,
    zero padding (``[N, C, H, W]`` -> same shape)."""
    radius = int(math.floor(sigma * BLUR_SIGMAS))
    if radius < 1:
        return img
    x = torch.arange(-radius, radius + 1, device=img.device, dtype=torch.float32)
    f = torch.exp2(-(x / sigma).square())
    return filter2d(img, f / f.sum())


class StyleGANLoss:
    """Holds G, D, the augment pipe and ``pl_mean``; :meth:`accumulate` runs one phase on one chunk.

    Args:
        G, D: generator and discriminator (G follows the official ``mapping``/``synthesis`` convention).
        cfg: :class:`LossConfig`.
        augment_pipe: applied to every image D sees (``None`` = no augmentation).
        ada: receives D's logits on real images (``None`` unless ADA is on).
    """

    def __init__(self, G: nn.Module, D: nn.Module, cfg: LossConfig, augment_pipe: AugmentPipe | None = None,
                 ada: AdaController | None = None) -> None:
        self.G, self.D, self.cfg = G, D, cfg
        self.augment_pipe, self.ada = augment_pipe, ada
        device = next(G.parameters()).device
        self.pl_mean = torch.zeros([], device=device)
        self._pl_acc = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of lengths, count) of a phase

    # -- helpers --

    def blur_sigma(self, cur_nimg: int) -> float:
        """The StyleGAN3-R blur sigma at ``cur_nimg`` images (linear fade)."""
        if self.cfg.blur_init_sigma <= 0:
            return 0.0
        if self.cfg.blur_fade_kimg <= 0:
            return 0.0
        return max(1 - cur_nimg / (self.cfg.blur_fade_kimg * 1e3), 0.0) * self.cfg.blur_init_sigma

    def run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[N, C, H, W]`` and their ``ws [N, num_ws, w_dim]``, with per-sample style mixing."""
        ws = self.G.mapping(z, c, update_emas=update_emas)
        if self.cfg.style_mixing_prob > 0:
            # Official: one crossover layer and one mix decision per chunk; per_sample draws them for every image.
            n, num_ws = ws.shape[0], ws.shape[1]
            draws = n if self.cfg.style_mixing_per_sample else 1
            cutoff = torch.randint(1, num_ws, (draws,), device=ws.device).expand(n)
            mix = (torch.rand(draws, device=ws.device) < self.cfg.style_mixing_prob).expand(n)
            cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, num_ws))
            ws2 = self.G.mapping(torch.randn_like(z), c, update_emas=False)
            use2 = torch.arange(num_ws, device=ws.device)[None, :] >= cutoff[:, None]
            ws = torch.where(use2[:, :, None], ws2, ws)
        img = self.G.synthesis(ws, update_emas=update_emas)
        return img, ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor, blur_sigma: float = 0.0) -> torch.Tensor:
        """Logits ``[N, 1]`` of D on (blurred, augmented) images."""
        if blur_sigma > 0:
            img = gaussian_blur(img, blur_sigma)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    # -- the phases --

    def accumulate(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor, gen_z: torch.Tensor,
                   gen_c: torch.Tensor, gain: float, denom: int, cur_nimg: int) -> dict[str, torch.Tensor]:
        """Forward and backward of ``phase`` on one chunk; returns detached loss sums for the statistics.

        Args:
            phase: one of :data:`PHASES`.
            real_img: real images ``[n, C, H, W]`` in [-1, 1].
            real_c: their labels ``[n, c_dim]``.
            gen_z, gen_c: latents ``[n, z_dim]`` and labels ``[n, c_dim]`` for generated images.
            gain: the phase's interval (lazy regularisation) or 1.
            denom: number of samples of this phase in the whole minibatch (all rounds and processes).
            cur_nimg: images shown so far (for the blur schedule).
        """
        sigma = self.blur_sigma(cur_nimg)
        stats: dict[str, torch.Tensor] = {}
        if phase == "Gmain":
            img, _ = self.run_G(gen_z, gen_c)
            logits = self.run_D(img, gen_c, sigma)
            loss = F.softplus(-logits).sum()
            (loss * (gain / denom)).backward()
            stats["loss/G"] = loss.detach()
            stats["count/G"] = torch.full([], float(logits.numel()), device=logits.device)
        elif phase == "Greg":
            n = max(gen_z.shape[0] // self.cfg.pl_batch_shrink, 1)
            img, ws = self.run_G(gen_z[:n], gen_c[:n])
            noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad(outputs=[(img * noise).sum()], inputs=[ws], create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            if self.cfg.pl_mean_update == "official":
                self.pl_mean.copy_(self.pl_mean.lerp(lengths.detach().mean(), self.cfg.pl_decay))
            else:
                self._pl_acc[0] += lengths.detach().sum().double()
                self._pl_acc[1] += n
            penalty = (lengths - self.pl_mean).square().sum() * self.cfg.pl_weight
            (penalty * (gain / denom)).backward()
            stats["loss/pl_penalty"] = penalty.detach()
            stats["count/pl_penalty"] = torch.full([], float(n), device=img.device)
        elif phase == "Dmain":
            with torch.no_grad():
                fake, _ = self.run_G(gen_z, gen_c, update_emas=True)
            fake_logits = self.run_D(fake, gen_c, sigma)
            real_logits = self.run_D(real_img, real_c, sigma)
            loss = F.softplus(fake_logits).sum() + F.softplus(-real_logits).sum()
            (loss * (gain / denom)).backward()
            if self.ada is not None:
                self.ada.accumulate(real_logits)
            stats["loss/D"] = loss.detach()
            stats["count/D"] = torch.full([], float(real_logits.numel()), device=real_logits.device)
            stats["scores/real"] = real_logits.detach().sum()
            stats["scores/fake"] = fake_logits.detach().sum()
            stats["count/scores/real"] = stats["count/D"]
            stats["count/scores/fake"] = stats["count/D"]
        elif phase == "Dreg":
            x = real_img.detach().requires_grad_(True)
            logits = self.run_D(x, real_c, sigma)
            (grad,) = torch.autograd.grad(outputs=[logits.sum()], inputs=[x], create_graph=True)
            penalty = grad.square().sum([1, 2, 3]) * (self.cfg.r1_gamma / 2)
            loss = penalty.sum()
            (loss * (gain / denom)).backward()
            stats["loss/r1_penalty"] = loss.detach()
            stats["count/r1_penalty"] = torch.full([], float(x.shape[0]), device=x.device)
        else:
            raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
        return stats

    def finish_phase(self, phase: str, all_reduce=None) -> None:
        """After all chunks of ``phase``: with ``pl_mean_update='after_minibatch'``, update ``pl_mean`` from the
        path lengths of the whole minibatch (Greg)."""
        if phase != "Greg" or self.cfg.pl_mean_update == "official":
            return
        acc = self._pl_acc.clone()
        if all_reduce is not None:
            acc = all_reduce(acc)
        self._pl_acc.zero_()
        batch_mean = (acc[0] / acc[1].clamp(min=1)).to(self.pl_mean.dtype).to(self.pl_mean.device)
        updated = self.pl_mean.lerp(batch_mean, self.cfg.pl_decay)
        self.pl_mean.copy_(torch.where(acc[1] > 0, updated, self.pl_mean))


def phase_denominator(phase: str, batch: int, cfg: LossConfig, batch_gpu: int) -> int:
    """Samples of ``phase`` in one minibatch (path length uses ``batch_gpu // shrink`` per chunk)."""
    if phase == "Greg":
        chunks = batch // batch_gpu
        return chunks * max(batch_gpu // cfg.pl_batch_shrink, 1)
    return batch


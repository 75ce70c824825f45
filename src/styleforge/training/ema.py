"""Exponential moving average of the generator's weights (G_ema, used for every image a user sees).

After each minibatch ``G_ema <- G + beta (G_ema - G)`` for parameters, and buffers are copied. The half-life
is ``ema_kimg`` thousand images; with ramp-up it is at most ``cur_nimg * ema_rampup`` images, so that early in
training G_ema follows G quickly (StyleGAN2-ADA). ``beta = 0.5 ** (batch / half_life_images)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ema_beta", "update_ema"]


def ema_beta(batch: int, cur_nimg: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """The EMA decay for one minibatch of ``batch`` images after ``cur_nimg`` images."""
    half_life = ema_kimg * 1000
    if ema_rampup is not None:
        half_life = min(half_life, cur_nimg * ema_rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """``G_ema`` parameters move toward ``G``'s by ``1 - beta``; buffers (w_avg, EMAs) are copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)

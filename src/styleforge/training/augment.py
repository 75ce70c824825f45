"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data"): the differentiable 'bgc' pipeline and the controller that adapts its probability p.

Every image D sees (real or generated) goes through :class:`AugmentPipe`. Each transform is applied to each
image independently with probability ``p`` (rotation with ``1 - sqrt(1 - p)``, because it is drawn twice,
before and after anisotropic scaling), so that at p < 0.8 the augmentations do not leak into G (paper,
section 2.3).

Geometric transforms (x-flip, 90-degree rotation, integer translation, isotropic scaling, arbitrary rotation,
anisotropic scaling, fractional translation) are composed into one 3x3 matrix per image, the inverse map from
output to input pixel coordinates. The image is upsampled 2x with an orthonormal wavelet, resampled with
bilinear ``grid_sample`` (mirror padding outside the image), and filtered back down, all differentiable.
Colour transforms (brightness, contrast, luma flip, hue rotation, saturation) form one 4x4 affine matrix per
image acting on RGB (on the mean for grayscale; alpha is left alone).

:class:`AdaController` follows the paper's overfitting heuristic r_t = E[sign(D(x_real))]: every
``interval`` minibatches p moves by ``sign(r_t - target) * batch * interval / (ada_kimg * 1000)``, so p can go
from 0 to 1 in ``ada_kimg`` thousand images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.ops.upfirdn2d import downsample2d, upsample2d

__all__ = ["AugmentStrengths", "AugmentPipe", "AdaController", "PIPELINES"]

#: Luma axis of RGB used by luma flip, hue rotation and saturation (equal weights, unit length).
LUMA_AXIS = (1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3))
#: Orthonormal near-symmetric wavelet (Symlet 4, 8 taps) used to resample 2x around the geometric warp.
#: Because it is orthonormal, upsampling and then downsampling with it (the second time as correlation) is the
#: identity, so a warp that does nothing leaves the image unchanged.
SYM4 = (-0.0757657148, -0.0296355276, 0.4976186676, 0.8037387518,
        0.2978577956, -0.0992195436, -0.0126039673, 0.0322231006)
#: Reflection margin added before resampling (half the filter length plus two).
RESAMPLE_MARGIN = len(SYM4) // 2 + 2
#: The wavelet is not exactly symmetric: the upsampled image is displaced by the offset of the filter's energy
#: centroid from its middle tap (in upsampled pixels, so half of it in input pixels). The warp is done about
#: the displaced centre, which makes flips and rotations line up with the input to within a small phase error.
SYM4_CENTER_OFFSET = (sum(k * t * t for k, t in enumerate(SYM4)) - (len(SYM4) - 1) / 2) / 2


@dataclass(frozen=True)
class AugmentStrengths:
    """Multipliers of each transform's probability (0 disables it) and the ranges of their parameters.

    The parameter ranges are those of the ADA paper (appendix B): integer translation by up to 1/8 of the
    image, log2 scale with standard deviation 0.2, rotation uniform over the full circle, fractional
    translation with standard deviation 1/8 of the image, brightness with standard deviation 0.2, log2
    contrast 0.5, hue rotation uniform over the full circle, log2 saturation 1.
    """

    xflip: float = 0.0
    rotate90: float = 0.0
    xint: float = 0.0
    scale: float = 0.0
    rotate: float = 0.0
    aniso: float = 0.0
    xfrac: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    lumaflip: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    xint_max: float = 0.125
    scale_std: float = 0.2
    rotate_max: float = 1.0
    aniso_std: float = 0.2
    xfrac_std: float = 0.125
    brightness_std: float = 0.2
    contrast_std: float = 0.5
    hue_max: float = 1.0
    saturation_std: float = 1.0

    def has_geometry(self) -> bool:
        return any((self.xflip, self.rotate90, self.xint, self.scale, self.rotate, self.aniso, self.xfrac))

    def has_color(self) -> bool:
        return any((self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation))


_B = dict(xflip=1, rotate90=1, xint=1)
_G = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_C = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
#: Named pipelines of the paper: b = pixel blitting, g = general geometric, c = colour.
PIPELINES: dict[str, AugmentStrengths] = {
    "blit": AugmentStrengths(**_B),
    "geom": AugmentStrengths(**_G),
    "color": AugmentStrengths(**_C),
    "bg": AugmentStrengths(**_B, **_G),
    "bgc": AugmentStrengths(**_B, **_G, **_C),
}


# -- 3x3 (2-D homogeneous) and 4x4 (3-D homogeneous) matrices, batched --

def _eye(n: int, batch: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, device=device).expand(batch, n, n).clone()


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(3, tx.shape[0], tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(3, sx.shape[0], sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(3, theta.shape[0], theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` about the unit ``axis`` [3] (Rodrigues' formula), as 4x4 homogeneous matrices."""
    x, y, z = axis
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    m = _eye(4, theta.shape[0], theta.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c
    return m


def _gate(p: float, values: torch.Tensor, identity: float) -> torch.Tensor:
    """Keep each sample's ``values`` with probability ``p``, else the identity value."""
    keep = torch.rand(values.shape[0], device=values.device) < p
    return torch.where(keep, values, torch.full_like(values, identity))


class AugmentPipe(nn.Module):
    """The differentiable augmentation applied to every image the discriminator sees.

    Args:
        strengths: which transforms are on, and their parameter ranges (:data:`PIPELINES`).
        p: initial probability (the buffer ``p``, changed by :class:`AdaController` or fixed).

    ``forward(images)``: ``[N, C, H, W]`` float in about [-1, 1] -> same shape; gradients flow to the input.
    Random numbers come from the global torch generator of the images' device.
    """

    def __init__(self, strengths: AugmentStrengths, p: float = 0.0) -> None:
        super().__init__()
        self.strengths = strengths
        self.register_buffer("p", torch.tensor(float(p)))
        taps = torch.tensor(SYM4, dtype=torch.float64)
        self.register_buffer("resample_filter", (taps / taps.sum()).float(), persistent=False)

    def extra_repr(self) -> str:
        on = [k for k, v in vars(self.strengths).items() if not k.endswith(("_max", "_std")) and v]
        return f"p={float(self.p):.4f}, transforms={on}"

    # -- geometry --

    def _geometry(self, n: int, h: int, w: int, p: float, device: torch.device) -> torch.Tensor | None:
        """Inverse transforms G^-1 (output pixel -> input pixel, origin at the image centre), [n, 3, 3]."""
        s = self.strengths
        g = _eye(3, n, device)
        touched = False
        if s.xflip > 0:
            i = torch.floor(torch.rand(n, device=device) * 2)
            i = _gate(p * s.xflip, i, 0)
            g = g @ _scale2d(1 - 2 * i, torch.ones_like(i))
            touched = True
        if s.rotate90 > 0:
            i = torch.floor(torch.rand(n, device=device) * 4)
            i = _gate(p * s.rotate90, i, 0)
            g = g @ _rotate2d(-math.pi / 2 * i)
            touched = True
        if s.xint > 0:
            t = (torch.rand(n, 2, device=device) * 2 - 1) * s.xint_max
            keep = torch.rand(n, device=device) < p * s.xint
            t = torch.where(keep[:, None], t, torch.zeros_like(t))
            g = g @ _translate2d(torch.round(t[:, 0] * w), torch.round(t[:, 1] * h))
            touched = True
        if s.scale > 0:
            sc = torch.exp2(torch.randn(n, device=device) * s.scale_std)
            sc = _gate(p * s.scale, sc, 1)
            g = g @ _scale2d(sc, sc)
            touched = True
        p_rot = 1 - math.sqrt(max(0.0, 1 - min(1.0, p * s.rotate)))
        if s.rotate > 0:
            theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * s.rotate_max
            theta = _gate(p_rot, theta, 0)
            g = g @ _rotate2d(-theta)
            touched = True
        if s.aniso > 0:
            a = torch.exp2(torch.randn(n, device=device) * s.aniso_std)
            a = _gate(p * s.aniso, a, 1)
            g = g @ _scale2d(a, 1 / a)
            touched = True
        if s.rotate > 0:
            theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * s.rotate_max
            theta = _gate(p_rot, theta, 0)
            g = g @ _rotate2d(-theta)
        if s.xfrac > 0:
            t = torch.randn(n, 2, device=device) * s.xfrac_std
            keep = torch.rand(n, device=device) < p * s.xfrac
            t = torch.where(keep[:, None], t, torch.zeros_like(t))
            g = g @ _translate2d(t[:, 0] * w, t[:, 1] * h)
            touched = True
        return g if touched else None

    def _warp(self, x: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
        """Resample ``x`` at ``g_inv @ output coordinates`` with 2x oversampling and mirror padding."""
        n, c, h, w = x.shape
        f = self.resample_filter.to(x.dtype)
        margin = min(RESAMPLE_MARGIN, h - 1, w - 1)
        hp, wp = h + 2 * margin, w + 2 * margin
        up = upsample2d(F.pad(x, [margin] * 4, mode="reflect"), f, up=2)
        # Pixel coordinates centred on the image -> grid_sample's [-1, 1] coordinates of the padded image.
        to_norm = torch.diag(torch.tensor([2.0 / wp, 2.0 / hp, 1.0], device=x.device))
        from_norm = torch.diag(torch.tensor([wp / 2.0, hp / 2.0, 1.0], device=x.device))
        shift, unshift = torch.eye(3, device=x.device), torch.eye(3, device=x.device)
        shift[:2, 2], unshift[:2, 2] = SYM4_CENTER_OFFSET, -SYM4_CENTER_OFFSET
        theta = (to_norm @ shift @ g_inv @ unshift @ from_norm)[:, :2, :].to(x.dtype)
        grid = F.affine_grid(theta, [n, c, 2 * hp, 2 * wp], align_corners=False)
        warped = F.grid_sample(up, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        down = downsample2d(warped, f, down=2, flip_filter=True)
        return down[:, :, margin : margin + h, margin : margin + w]

    # -- colour --

    def _color(self, n: int, p: float, device: torch.device) -> torch.Tensor | None:
        """Colour transforms as [n, 4, 4] homogeneous matrices acting on (R, G, B, 1)."""
        s = self.strengths
        if not s.has_color():
            return None
        v = torch.tensor([*LUMA_AXIS, 0.0], device=device)
        vv = torch.outer(v, v)
        eye4 = torch.eye(4, device=device)
        m = _eye(4, n, device)
        if s.brightness > 0:
            b = _gate(p * s.brightness, torch.randn(n, device=device) * s.brightness_std, 0)
            t = _eye(4, n, device)
            t[:, 0, 3], t[:, 1, 3], t[:, 2, 3] = b, b, b
            m = t @ m
        if s.contrast > 0:
            k = _gate(p * s.contrast, torch.exp2(torch.randn(n, device=device) * s.contrast_std), 1)
            t = _eye(4, n, device)
            t[:, 0, 0], t[:, 1, 1], t[:, 2, 2] = k, k, k
            m = t @ m
        if s.lumaflip > 0:
            i = _gate(p * s.lumaflip, torch.floor(torch.rand(n, device=device) * 2), 0)
            m = (eye4 - 2 * vv * i[:, None, None]) @ m
        if s.hue > 0:
            theta = _gate(p * s.hue, (torch.rand(n, device=device) * 2 - 1) * math.pi * s.hue_max, 0)
            m = _rotate3d(v[:3], theta) @ m
        if s.saturation > 0:
            k = _gate(p * s.saturation, torch.exp2(torch.randn(n, device=device) * s.saturation_std), 1)
            m = (vv + (eye4 - vv) * k[:, None, None]) @ m
        return m

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"AugmentPipe expects [N, C, H, W], got {tuple(images.shape)}")
        p = float(self.p)
        if p <= 0:
            return images
        n, c, h, w = images.shape
        x = images
        g_inv = self._geometry(n, h, w, p, x.device) if self.strengths.has_geometry() else None
        if g_inv is not None:
            x = self._warp(x, g_inv)
        cm = self._color(n, p, x.device)
        if cm is not None:
            cm = cm.to(x.dtype)
            if c == 1:
                # Grayscale: the average row of the 3x3 part acting on the single channel.
                gain = cm[:, :3, :3].mean(dim=(1, 2)) * 3
                bias = cm[:, :3, 3].mean(dim=1)
                x = x * gain[:, None, None, None] + bias[:, None, None, None]
            else:
                rgb = x[:, :3].reshape(n, 3, h * w)
                rgb = cm[:, :3, :3] @ rgb + cm[:, :3, 3:]
                x = torch.cat([rgb.reshape(n, 3, h, w), x[:, 3:]], dim=1)
        return x


class AdaController:
    """Adjusts ``pipe.p`` toward the target sign of D's outputs on real images (paper, section 3).

    Call :meth:`accumulate` with the real logits of each Dmain round, then :meth:`update` after every
    minibatch; every ``interval`` minibatches p moves by ``sign(r_t - target) * batch * interval / (kimg *
    1000)``, clamped at 0 (and at 1). ``all_reduce`` sums the accumulators over ranks.

    State (``state_dict``): the accumulated ``[sum of signs, count]`` and the minibatch counter.
    """

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, interval: int = 4, ada_kimg: float = 500,
                 batch_size: int = 64) -> None:
        self.pipe, self.target, self.interval = pipe, target, interval
        self.ada_kimg, self.batch_size = ada_kimg, batch_size
        self.acc = torch.zeros(2, dtype=torch.float64)
        self.steps = 0
        self.last_rt: float = float("nan")

    def accumulate(self, real_logits: torch.Tensor) -> None:
        self.acc += torch.stack([torch.sign(real_logits.detach()).sum().double().cpu(),
                                 torch.tensor(float(real_logits.numel()), dtype=torch.float64)])

    def update(self, all_reduce=None) -> None:
        """Count one minibatch; every ``interval`` of them, adjust p (all ranks get the same value)."""
        self.steps += 1
        if self.steps % self.interval != 0:
            return
        acc = self.acc.clone()
        if all_reduce is not None:
            acc = all_reduce(acc)
        self.acc.zero_()
        if acc[1] <= 0:
            return
        self.last_rt = float(acc[0] / acc[1])
        step = np.sign(self.last_rt - self.target) * self.batch_size * self.interval / (self.ada_kimg * 1000)
        new_p = min(max(float(self.pipe.p) + float(step), 0.0), 1.0)
        self.pipe.p.fill_(new_p)

    def state_dict(self) -> dict:
        return {"acc": self.acc.clone(), "steps": self.steps, "last_rt": self.last_rt}

    def load_state_dict(self, state: dict) -> None:
        self.acc = state["acc"].clone().to(torch.float64)
        self.steps = int(state["steps"])
        self.last_rt = float(state["last_rt"])

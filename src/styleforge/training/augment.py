"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data"): the differentiable 'bgc' pipeline and the controller that adapts its probability p.

Every image D sees (real or generated) goes through :class:`AugmentPipe`, which has the official groups and
pipeline names (``blit``, ``geom``, ``color``, ``filter``, ``noise``, ``cutout``, ``bg``, ``bgc``, ``bgcf``,
``bgcfn``, ``bgcfnc``). Each transform is applied to each
image independently with probability ``p`` (rotation with ``1 - sqrt(1 - p)``, because it is drawn twice,
before and after anisotropic scaling), so that at p < 0.8 the augmentations do not leak into G (paper,
section 2.3).

Geometric transforms (x-flip, 90-degree rotation, integer translation, isotropic scaling, arbitrary rotation,
anisotropic scaling, fractional translation) are composed into one 3x3 matrix per image, the inverse map from
output to input pixel coordinates. As in the official pipeline, the image is reflect-padded by the margin the
transformed corners need, upsampled 2x with the Symlet-6 wavelet, resampled with bilinear ``grid_sample``, and
filtered back down, all differentiable; a constant image stays constant under any rotation, zoom or translation.
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
#: Orthonormal near-symmetric wavelet (Symlet 6, 12 taps; the official pipeline's geometric resampling filter)
#: used to resample 2x around the geometric warp. Because it is orthonormal, upsampling and then downsampling with
#: it (the second time as correlation) is the identity, so a warp that does nothing leaves the image unchanged.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)
#: Symlet 2 (4 taps): the low-pass prototype of the image-space filter bank (group ``f``).
SYM2 = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)
#: Extra border (input pixels) kept around the warped image so that the 2x downsampling filter has support:
#: a quarter of the filter length, as in the official pipeline.
RESAMPLE_PAD = len(SYM6) // 4
#: The wavelet is not exactly symmetric: the upsampled image is displaced by the offset of the filter's energy
#: centroid from its middle tap (in upsampled pixels, so half of it in input pixels). The warp is done about
#: the displaced centre, which makes flips and rotations line up with the input to within a small phase error.
SYM6_CENTER_OFFSET = (sum(k * t * t for k, t in enumerate(SYM6)) - (len(SYM6) - 1) / 2) / 2
#: Expected share of the image power in each of the four octave bands of group ``f`` (lowest band first); the
#: random band gains are normalised so that this expected power is preserved.
FILTER_BAND_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)


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
    imgfilter: float = 0.0  # image-space filtering: random gains of four octave bands
    imgfilter_bands: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    imgfilter_std: float = 1.0  # log2 standard deviation of a band's gain
    noise: float = 0.0  # additive Gaussian noise, sigma ~ |N(0, noise_std)| per image
    noise_std: float = 0.1
    cutout: float = 0.0  # a square of side cutout_size (fraction of the image) set to 0
    cutout_size: float = 0.5

    def has_geometry(self) -> bool:
        return any((self.xflip, self.rotate90, self.xint, self.scale, self.rotate, self.aniso, self.xfrac))

    def has_color(self) -> bool:
        return any((self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation))


_B = dict(xflip=1, rotate90=1, xint=1)
_G = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_C = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
_F = dict(imgfilter=1)
_N = dict(noise=1)
_CUT = dict(cutout=1)
#: The official named pipelines: b = pixel blitting, g = general geometric, c = colour, f = image-space filtering,
#: n = additive noise, c (last) = cutout.
PIPELINES: dict[str, AugmentStrengths] = {
    "blit": AugmentStrengths(**_B),
    "geom": AugmentStrengths(**_G),
    "color": AugmentStrengths(**_C),
    "filter": AugmentStrengths(**_F),
    "noise": AugmentStrengths(**_N),
    "cutout": AugmentStrengths(**_CUT),
    "bg": AugmentStrengths(**_B, **_G),
    "bgc": AugmentStrengths(**_B, **_G, **_C),
    "bgcf": AugmentStrengths(**_B, **_G, **_C, **_F),
    "bgcfn": AugmentStrengths(**_B, **_G, **_C, **_F, **_N),
    "bgcfnc": AugmentStrengths(**_B, **_G, **_C, **_F, **_N, **_CUT),
}


def _octave_filter_bank(prototype: tuple[float, ...]) -> np.ndarray:
    """Four zero-phase band-pass filters [4, taps] that split the spectrum into octaves and sum to a delta.

    From the orthonormal low-pass ``h`` and its quadrature mirror ``g[k] = (-1)^k h[k]``: the half-band
    low-pass ``L = (h * reverse(h)) / 2`` and high-pass ``Hp = (g * reverse(g)) / 2`` (``L + Hp`` is a unit
    impulse). Band 3 (highest) is ``Hp``; band k < 3 is the lower bands of the previous level dilated by 2
    (``z -> z^2``) and filtered by ``L``, so band 0 holds the lowest octave and the four bands add up to a delta.
    """
    h = np.asarray(prototype, dtype=np.float64)
    g = h * (-1.0) ** np.arange(len(h))
    low = np.convolve(h, h[::-1]) / 2
    high = np.convolve(g, g[::-1]) / 2
    bands = [np.array([1.0])]  # the whole band at the coarsest level
    for _ in range(3):
        dilated = []
        for b in bands:
            d = np.zeros(2 * len(b) - 1)
            d[::2] = b
            dilated.append(np.convolve(d, low))
        bands = dilated + [high]
    width = max(len(b) for b in bands)
    out = np.zeros((len(bands), width))
    for i, b in enumerate(bands):
        off = (width - len(b)) // 2
        out[i, off : off + len(b)] = b
    return out


# -- 3x3 (2-D homogeneous) and 4x4 (3-D homogeneous) matrices, batched --

def _eye(n: int, batch: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, device=device).expand(batch, n, n).clone()


def _diag3(a: float, b: float, device: torch.device) -> torch.Tensor:
    """``diag(a, b, 1)``, built on the device (no host-to-device copy)."""
    m = torch.eye(3, device=device)
    m[0, 0], m[1, 1] = a, b
    return m


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


def _gate(p: float | torch.Tensor, values: torch.Tensor, identity: float) -> torch.Tensor:
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
        taps = torch.tensor(SYM6, dtype=torch.float64)
        self.register_buffer("resample_filter", (taps / taps.sum()).float(), persistent=False)
        self.register_buffer("filter_bank", torch.from_numpy(_octave_filter_bank(SYM2)).float(), persistent=False)
        # Constants kept on the module's device: building them per call would copy them from the host each time.
        self.register_buffer("band_power", torch.tensor(FILTER_BAND_POWER), persistent=False)
        self.register_buffer("luma_axis", torch.tensor([*LUMA_AXIS, 0.0]), persistent=False)

    def extra_repr(self) -> str:
        on = [k for k, v in vars(self.strengths).items() if isinstance(v, (int, float)) and v and "_" not in k]
        return f"p={float(self.p):.4f}, transforms={on}"

    # -- geometry --

    def _geometry(self, n: int, h: int, w: int, p: torch.Tensor, device: torch.device) -> torch.Tensor | None:
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
        p_rot = 1 - (1 - (p * s.rotate).clamp(max=1.0)).clamp(min=0.0).sqrt()
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
        """Resample ``x`` at ``g_inv @ output coordinates`` (pixel units, origin at the image centre).

        As the official pipeline: reflect-pad, upsample 2x with the wavelet, sample bilinearly, filter back down
        and crop. The official pipeline pads by the margin the transformed corners need, clipped at the image
        size minus one; that margin is a device value, and a tensor shape made from it would make the host wait
        for the device at every call. Here the padding is always that upper bound (``size - 1`` each side), which
        samples the same reflected pixels at the same places. A constant image stays constant.
        """
        n, c, h, w = x.shape
        f = self.resample_filter.to(x.dtype)
        pad = RESAMPLE_PAD
        mx, my = w - 1, h - 1
        x = F.pad(x, [mx, mx, my, my], mode="reflect")
        hp, wp = x.shape[2], x.shape[3]
        up = upsample2d(x, f, up=2)
        # Centred pixel coordinates; 2x resampling scales them by 2 (the padding is symmetric: the centre stays).
        eye = torch.eye(3, device=x.device)
        shift, unshift = eye.clone(), eye.clone()
        shift[:2, 2], unshift[:2, 2] = SYM6_CENTER_OFFSET, -SYM6_CENTER_OFFSET
        out_h, out_w = 2 * (h + 2 * pad), 2 * (w + 2 * pad)
        to_norm, from_norm, twice, half = (_diag3(a, b, x.device) for a, b in (
            (2.0 / (2 * wp), 2.0 / (2 * hp)), (out_w / 2.0, out_h / 2.0), (2.0, 2.0), (0.5, 0.5)))
        theta = to_norm @ twice @ shift @ g_inv @ unshift @ half @ from_norm
        grid = F.affine_grid(theta[:, :2, :].to(x.dtype), [n, c, out_h, out_w], align_corners=False)
        warped = F.grid_sample(up, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        down = downsample2d(warped, f, down=2, flip_filter=True)
        return down[:, :, pad : pad + h, pad : pad + w]

    # -- image-space filtering, noise, cutout --

    def _filter(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Random gains of four octave bands (log2-normal), normalised to keep the expected power; separable."""
        s = self.strengths
        n, c, h, w = x.shape
        power = self.band_power.to(x.device)
        gains = torch.ones(n, 4, device=x.device)
        for i, band in enumerate(s.imgfilter_bands):
            gain = torch.exp2(torch.randn(n, device=x.device) * s.imgfilter_std)
            gains[:, i] = _gate(p * s.imgfilter * band, gain, 1)
        gains = gains / (power * gains.square()).sum(dim=1, keepdim=True).sqrt()
        taps = (gains @ self.filter_bank.to(x.device)).to(x.dtype)  # [n, K], one filter per image
        k = taps.shape[1]
        radius = k // 2
        rad_x, rad_y = min(radius, w - 1), min(radius, h - 1)
        if rad_x < radius or rad_y < radius:  # image smaller than the filter: trim the taps symmetrically
            taps = taps[:, radius - min(rad_x, rad_y) : radius + min(rad_x, rad_y) + 1]
            rad_x = rad_y = min(rad_x, rad_y)
        kern = taps.repeat_interleave(c, dim=0)  # [n * c, K]
        y = x.reshape(1, n * c, h, w)
        y = F.pad(y, [rad_x, rad_x, 0, 0], mode="reflect")
        y = F.conv2d(y, kern[:, None, None, :], groups=n * c)
        y = F.pad(y, [0, 0, rad_y, rad_y], mode="reflect")
        y = F.conv2d(y, kern[:, None, :, None], groups=n * c)
        return y.reshape(n, c, h, w)

    def _noise(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        s = self.strengths
        n = x.shape[0]
        sigma = _gate(p * s.noise, torch.randn(n, device=x.device).abs() * s.noise_std, 0)
        return x + torch.randn_like(x) * sigma.to(x.dtype)[:, None, None, None]

    def _cutout(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        s = self.strengths
        n, _, h, w = x.shape
        size = _gate(p * s.cutout, torch.full((n,), s.cutout_size, device=x.device), 0)
        centre = torch.rand(n, 2, device=x.device)
        cy = (torch.arange(h, device=x.device) + 0.5) / h
        cx = (torch.arange(w, device=x.device) + 0.5) / w
        out_x = (cx[None, :] - centre[:, 0:1]).abs() >= size[:, None] / 2  # [n, w]
        out_y = (cy[None, :] - centre[:, 1:2]).abs() >= size[:, None] / 2  # [n, h]
        keep = out_x[:, None, :] | out_y[:, :, None]
        return x * keep[:, None].to(x.dtype)

    # -- colour --

    def _color(self, n: int, p: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """Colour transforms as [n, 4, 4] homogeneous matrices acting on (R, G, B, 1)."""
        s = self.strengths
        if not s.has_color():
            return None
        v = self.luma_axis.to(device)
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
        """Augment ``images``; ``p`` stays a device tensor throughout (no host synchronisation), and at ``p = 0``
        the images come back exactly (the pipeline still runs, as the official one does)."""
        if images.ndim != 4:
            raise ValueError(f"AugmentPipe expects [N, C, H, W], got {tuple(images.shape)}")
        p = self.p.to(images.device, torch.float32)
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
        if self.strengths.imgfilter > 0:
            x = self._filter(x, p)
        if self.strengths.noise > 0:
            x = self._noise(x, p)
        if self.strengths.cutout > 0:
            x = self._cutout(x, p)
        return torch.where(p > 0, x, images)


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
        self.acc = torch.zeros(2, dtype=torch.float64, device=pipe.p.device)
        self.steps = 0
        self._last_rt = torch.full([], float("nan"), dtype=torch.float64, device=pipe.p.device)

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add the signs of D's logits on real images (stays on the device: no host synchronisation)."""
        logits = real_logits.detach()
        if self.acc.device != logits.device:
            self.acc = self.acc.to(logits.device)
        self.acc[0] += torch.sign(logits).sum().double()
        self.acc[1] += logits.numel()

    def update(self, all_reduce=None) -> None:
        """Count one minibatch; every ``interval`` of them, adjust p (all ranks get the same value).

        Everything stays on the device (r_t, the step, the clamp): the loop never waits for the device here;
        :attr:`last_rt` is read when a tick is reported.
        """
        self.steps += 1
        if self.steps % self.interval != 0:
            return
        acc = self.acc.clone()
        if all_reduce is not None:
            acc = all_reduce(acc)
        self.acc.zero_()
        seen = acc[1] > 0
        rt = acc[0] / acc[1].clamp(min=1)
        step = torch.sign(rt - self.target) * (self.batch_size * self.interval / (self.ada_kimg * 1000))
        p = self.pipe.p
        new_p = (p.double() + step).clamp(0.0, 1.0).to(p.dtype)
        p.copy_(torch.where(seen, new_p, p))
        self._last_rt = torch.where(seen, rt, self._last_rt.to(rt.device))

    @property
    def last_rt(self) -> float:
        """The latest r_t (NaN before the first adjustment); reading it waits for the device."""
        return float(self._last_rt)

    def state_dict(self) -> dict:
        return {"acc": self.acc.detach().cpu().clone(), "steps": self.steps, "last_rt": self.last_rt}

    def load_state_dict(self, state: dict) -> None:
        self.acc = state["acc"].clone().to(device=self.pipe.p.device, dtype=torch.float64)
        self.steps = int(state["steps"])
        self._last_rt = torch.tensor(float(state["last_rt"]), dtype=torch.float64, device=self.pipe.p.device)

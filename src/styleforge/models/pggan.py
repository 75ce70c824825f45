"""Progressive GAN (PGGAN): generator and discriminator that grow from 4x4 to the final resolution.

Paper:
    Tero Karras, Timo Aila, Samuli Laine, Jaakko Lehtinen. "Progressive Growing of GANs for Improved Quality,
    Stability, and Variation". ICLR 2018. https://arxiv.org/abs/1710.10196

    @inproceedings{karras2018progressive,
      title     = {Progressive Growing of {GAN}s for Improved Quality, Stability, and Variation},
      author    = {Karras, Tero and Aila, Timo and Laine, Samuli and Lehtinen, Jaakko},
      booktitle = {International Conference on Learning Representations},
      year      = {2018}}

This is an independent implementation written from the paper (section 2 and appendix A, table 2). No code of
the official release is used. Weights trained with this module are the user's; the official PGGAN weights
(TensorFlow pickles, under a non-commercial licence) are not loaded here.

Architecture (paper section 4 and table 2):

- Generator: the latent ``z`` (concatenated with the one-hot label ``c`` when ``c_dim > 0``) is normalised
  to unit mean square per sample (pixel norm), mapped by a dense layer to a ``4x4`` feature map, followed by a
  ``3x3`` convolution. Every further resolution ``R`` is ``[nearest x2 upsample, 3x3 conv, 3x3 conv]``. Every
  convolution is followed by a leaky ReLU (slope 0.2) and pixelwise feature-vector normalisation (eq. 4: ``b =
  a / sqrt(mean(a^2) + eps)``). Each resolution has its own ``1x1`` toRGB convolution (linear).
- Discriminator, mirrored: a ``1x1`` fromRGB per resolution, blocks ``[3x3 conv, 3x3 conv, 2x2 average
  pool]``, and a final ``4x4`` block with the minibatch standard deviation feature (section 3), a ``3x3``
  conv, a ``4x4`` conv (written as a dense layer over the flattened ``4x4`` map, which is the same operation)
  and a linear output.
- Equalized learning rate (section 4.1): weights are stored with unit variance and multiplied at run time by
  the He constant. The layers come from :mod:`styleforge.layers.equalized`, which multiply by
  ``1/sqrt(fan_in)`` and apply the leaky ReLU with gain ``sqrt(2)``; since ``sqrt(2) * lrelu(y) ==
  lrelu(sqrt(2) * y)`` this is exactly the paper's ``lrelu(w * sqrt(2 / fan_in) * x + b')`` with the bias
  reparametrised as ``b' = sqrt(2) * b``.
- Channels (appendix A): the block at resolution ``2**r`` has ``min(fmap_base / 2**((r - 1) * fmap_decay),
  fmap_max)`` feature maps; the paper uses ``fmap_base = 8192, fmap_decay = 1, fmap_max = 512``.
- Growing (section 2, figure 2): the networks hold every resolution up to ``img_resolution``. The persistent
  buffers ``stage_resolution`` (the current output resolution ``R``) and ``stage_alpha`` (the fade-in weight
  ``alpha``) select the part in use, so a saved state dict captures the stage. While a new resolution fades
  in, G returns ``(1 - alpha) * upsample(toRGB_{R/2}(x)) + alpha * toRGB_R(block_R(x))`` and D mirrors it with
  ``0.5x`` downsampling. At ``alpha = 1`` the networks are plain networks at resolution ``R``.
- Conditioning: G concatenates the label to the latent; D has an auxiliary classifier head of ``c_dim`` logits
  (AC-GAN, Odena et al. 2017, the conditioning of the original PGGAN release), returned when asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.layers.equalized import EqualizedConv2d, EqualizedLinear
from styleforge.models.base import Network, register_network
from styleforge.models.registry import Preset, register_preset
from styleforge.utils.errors import UserInputError

__all__ = [
    "PGGANGeneratorConfig",
    "PGGANDiscriminatorConfig",
    "PGGANGenerator",
    "PGGANDiscriminator",
    "pixel_norm",
    "minibatch_stddev",
    "upsample_nearest",
    "downsample_box",
    "feature_maps",
]

#: resolution of the first block (the paper starts growing at 4x4)
BASE_RESOLUTION = 4
#: leaky ReLU slope used everywhere (paper section A.1)
LRELU_SLOPE = 0.2
#: gain after the leaky ReLU, the convention of :mod:`styleforge.layers.equalized` (He's sqrt(2))
LRELU_GAIN = math.sqrt(2.0)
#: epsilon inside the pixel norm square root (paper eq. 4: 1e-8)
PIXEL_NORM_EPS = 1e-8
#: epsilon added to the variance in the minibatch standard deviation
MBSTD_EPS = 1e-8
#: resampling factor between consecutive resolutions
SCALE = 2


# ------------------------------------------------------------------------------------------------------------
# Functional building blocks


def pixel_norm(x: torch.Tensor, eps: float = PIXEL_NORM_EPS) -> torch.Tensor:
    """Pixelwise feature-vector normalisation (paper eq. 4): ``b_xy = a_xy / sqrt(mean_j(a_xy^j)^2 + eps)``.

    Args:
        x: ``[N, C]`` or ``[N, C, H, W]``; normalised over the channel axis ``C`` at every pixel.
        eps: the paper's ``epsilon = 1e-8``.

    Returns:
        Same shape as ``x``; every feature vector has mean square 1 (up to ``eps``).
    """
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append the minibatch standard deviation feature map (paper section 3).

    The batch is split into groups of ``G = min(group_size, N)`` samples; sample ``n`` belongs to group ``n %
    (N / G)``. Within each group the standard deviation of every feature at every pixel is computed, averaged
    over features and pixels to one number per group, and that number is appended as a constant extra channel
    to each group member.

    Args:
        x: features ``[N, C, H, W]``; ``N`` must be divisible by ``G``.
        group_size: ``G``; the paper uses 4.

    Returns:
        ``[N, C + 1, H, W]``.
    """
    n, c, h, w = x.shape
    g = min(group_size, n)
    if n % g != 0:
        raise UserInputError(
            f"minibatch standard deviation: batch size {n} is not divisible by the group size {g}; "
            "use a batch size that is a multiple of mbstd_group_size (or set mbstd_group_size=1)."
        )
    y = x.reshape(g, n // g, c, h, w)  # [G, M, C, H, W]
    y = y - y.mean(dim=0)  # deviation from the group mean
    y = (y.square().mean(dim=0) + MBSTD_EPS).sqrt()  # [M, C, H, W] standard deviation per feature and pixel
    y = y.mean(dim=(1, 2, 3))  # [M] one number per group
    y = y.reshape(1, n // g, 1, 1, 1).expand(g, n // g, 1, h, w).reshape(n, 1, h, w)
    return torch.cat([x, y], dim=1)


def upsample_nearest(x: torch.Tensor, factor: int = SCALE) -> torch.Tensor:
    """Nearest-neighbour upsampling ``[N, C, H, W] -> [N, C, H*factor, W*factor]`` (each pixel repeated)."""
    if factor == 1:
        return x
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def downsample_box(x: torch.Tensor, factor: int = SCALE) -> torch.Tensor:
    """Average pooling over ``factor x factor`` blocks ``[N, C, H, W] -> [N, C, H/factor, W/factor]``."""
    if factor == 1:
        return x
    return F.avg_pool2d(x, kernel_size=factor, stride=factor)


def feature_maps(stage: int, fmap_base: int, fmap_decay: float, fmap_max: int) -> int:
    """The paper's channel formula ``nf(stage) = min(fmap_base / 2**(stage * fmap_decay), fmap_max)``.

    The block at resolution ``2**r`` has ``nf(r - 1)`` feature maps (``nf(1) = 512`` at 4x4 with the paper's
    values); ``nf(0)`` is the width of the discriminator's dense layer after its ``4x4`` convolution.
    """
    return max(1, min(int(fmap_base / (2.0 ** (stage * fmap_decay))), fmap_max))


def _check_resolution(img_resolution: int, what: str) -> int:
    log2 = int(round(math.log2(img_resolution))) if img_resolution > 0 else -1
    if img_resolution < BASE_RESOLUTION or 2**log2 != img_resolution:
        raise UserInputError(
            f"{what}: img_resolution={img_resolution} is not a power of two >= {BASE_RESOLUTION}; "
            "PGGAN grows from 4x4 by doubling, so use 4, 8, 16, ..., 1024."
        )
    return log2


# ------------------------------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class PGGANGeneratorConfig:
    """Hyperparameters of :class:`PGGANGenerator` (defaults: the paper's CelebA-HQ 1024x1024 network)."""

    z_dim: int = 512  # latent size (paper: 512)
    c_dim: int = 0  # label size; > 0 concatenates the one-hot label to z
    img_resolution: int = 1024  # final output resolution (power of two)
    img_channels: int = 3  # RGB
    fmap_base: int = 8192  # channel formula numerator
    fmap_decay: float = 1.0  # channel formula log2 decay per resolution
    fmap_max: int = 512  # channel cap
    normalize_latents: bool = True  # pixel norm on the input latent (section 4.2)
    use_pixel_norm: bool = True  # pixel norm after every convolution (section 4.2)


@dataclass(frozen=True)
class PGGANDiscriminatorConfig:
    """Hyperparameters of :class:`PGGANDiscriminator` (defaults: the paper's 1024x1024 network)."""

    c_dim: int = 0  # label size; > 0 adds an auxiliary classifier head with c_dim logits
    img_resolution: int = 1024  # final input resolution (power of two)
    img_channels: int = 3
    fmap_base: int = 8192
    fmap_decay: float = 1.0
    fmap_max: int = 512
    mbstd_group_size: int = 4  # minibatch standard deviation group size (section 3); 1 disables the layer


# ------------------------------------------------------------------------------------------------------------
# Stage handling shared by G and D


class _Growing(Network):
    """Holds the persistent stage buffers and the logic to set and read them."""

    def _init_stage(self, img_resolution: int) -> None:
        self.log2_resolution = _check_resolution(img_resolution, type(self).__name__)
        self.resolutions = [2**r for r in range(int(math.log2(BASE_RESOLUTION)), self.log2_resolution + 1)]
        # Persistent so that a snapshot captures the stage; start as the full-size, fully faded-in network.
        self.register_buffer("stage_resolution", torch.tensor(img_resolution, dtype=torch.int64))
        self.register_buffer("stage_alpha", torch.tensor(1.0, dtype=torch.float32))

    @property
    def current_resolution(self) -> int:
        """Resolution ``R`` of the images the network currently produces (G) or consumes (D)."""
        return self._stage()[0]

    @property
    def alpha(self) -> float:
        """Fade-in weight of the newest block, in ``[0, 1]`` (1 = fully faded in)."""
        return self._stage()[1]

    def _stage_key(self) -> tuple[int, int, int, int]:
        r, a = self.stage_resolution, self.stage_alpha
        return (r._version, a._version, r.data_ptr(), a.data_ptr())

    def _stage(self) -> tuple[int, float]:
        """``(R, alpha)``: the host copy :meth:`set_stage` keeps while the buffers are unchanged since (reading a
        CUDA buffer makes the host wait for the device, at every forward), else read from the buffers (after
        ``load_state_dict``, an EMA copy, a move to another device)."""
        if getattr(self, "_stage_host_key", None) != self._stage_key():
            self._stage_host = (int(self.stage_resolution.item()), float(self.stage_alpha.item()))
            self._stage_host_key = self._stage_key()
        return self._stage_host

    def set_stage(self, resolution: int, alpha: float = 1.0) -> _Growing:
        """Select the growing stage: output resolution ``R`` and fade-in weight ``alpha`` of the ``R`` block.

        Args:
            resolution: a power of two in ``[4, img_resolution]``.
            alpha: in ``[0, 1]``; values below 1 blend with the ``R/2`` network (not allowed at 4x4).

        Returns ``self``. The stage lives in the buffers ``stage_resolution`` and ``stage_alpha``.
        """
        if int(resolution) not in self.resolutions:
            raise UserInputError(
                f"set_stage: resolution {resolution} is not one of this network's resolutions "
                f"{self.resolutions}."
            )
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise UserInputError(f"set_stage: alpha must lie in [0, 1], got {alpha}.")
        if alpha < 1.0 and int(resolution) == BASE_RESOLUTION:
            raise UserInputError("set_stage: the 4x4 stage has no lower resolution to fade from; use alpha=1")
        self.stage_resolution.fill_(int(resolution))
        self.stage_alpha.fill_(alpha)
        self._stage_host = (int(resolution), float(np.float32(alpha)))  # as the float32 buffer holds it
        self._stage_host_key = self._stage_key()
        return self

    def extra_repr(self) -> str:
        res, alpha = self.current_resolution, self.alpha
        return f"img_resolution={self.config.img_resolution}, stage=({res}, alpha={alpha:g})"


# ------------------------------------------------------------------------------------------------------------
# Generator


class _GeneratorBlock(nn.Module):
    """One resolution of G: ``[upsample x2, conv 3x3, PN, conv 3x3, PN]`` (each conv with leaky ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, use_pixel_norm: bool) -> None:
        super().__init__()
        self.use_pixel_norm = use_pixel_norm
        self.conv0 = EqualizedConv2d(in_channels, out_channels, 3, activation="lrelu")
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3, activation="lrelu")

    def _pn(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_norm(x) if self.use_pixel_norm else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C_in, H, W] -> [N, C_out, 2H, 2W]``."""
        x = upsample_nearest(x)
        x = self._pn(self.conv0(x))
        return self._pn(self.conv1(x))


class _GeneratorInput(nn.Module):
    """The 4x4 block of G: ``[dense -> 4x4, lrelu, PN, conv 3x3, lrelu, PN]``.

    The dense layer has one bias per channel (added after reshaping to ``4x4``), as the paper's transposed
    ``4x4`` convolution from a ``1x1`` input.
    """

    def __init__(self, in_features: int, channels: int, use_pixel_norm: bool) -> None:
        super().__init__()
        self.channels = channels
        self.use_pixel_norm = use_pixel_norm
        self.dense = EqualizedLinear(in_features, channels * BASE_RESOLUTION**2, bias=False)
        self.dense_bias = nn.Parameter(torch.zeros(channels))
        self.conv = EqualizedConv2d(channels, channels, 3, activation="lrelu")

    def _pn(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_norm(x) if self.use_pixel_norm else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_features] -> [N, C, 4, 4]``."""
        x = self.dense(x).reshape(-1, self.channels, BASE_RESOLUTION, BASE_RESOLUTION)
        x = x + self.dense_bias.to(x.dtype).reshape(1, -1, 1, 1)
        x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
        x = self._pn(x)
        return self._pn(self.conv(x))


@register_network
class PGGANGenerator(_Growing):
    """PGGAN generator ``G(z, c) -> images [N, img_channels, R, R]`` at the current stage resolution ``R``.

    Attributes: ``z_dim``, ``c_dim``, ``img_resolution`` (final), ``img_channels``, ``current_resolution``,
    ``alpha``. Parameters of all resolutions exist from the start; :meth:`set_stage` chooses which are used.
    State-dict keys: ``input.*`` (4x4 block), ``blocks.b{R}.conv{0,1}.*`` and ``to_rgb.b{R}.*``.
    """

    config_class = PGGANGeneratorConfig

    def __init__(self, config: PGGANGeneratorConfig) -> None:
        super().__init__(config)
        if config.z_dim < 1 or config.c_dim < 0 or config.img_channels < 1:
            raise UserInputError(
                f"PGGANGenerator: need z_dim >= 1, c_dim >= 0, img_channels >= 1; got {config}."
            )
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self._init_stage(config.img_resolution)

        def nf(stage: int) -> int:
            return feature_maps(stage, config.fmap_base, config.fmap_decay, config.fmap_max)

        base_log2 = int(math.log2(BASE_RESOLUTION))
        self.input = _GeneratorInput(config.z_dim + config.c_dim, nf(base_log2 - 1), config.use_pixel_norm)
        self.blocks = nn.ModuleDict()
        self.to_rgb = nn.ModuleDict()
        for res in self.resolutions:
            r = int(math.log2(res))
            if res > BASE_RESOLUTION:
                self.blocks[f"b{res}"] = _GeneratorBlock(nf(r - 2), nf(r - 1), config.use_pixel_norm)
            self.to_rgb[f"b{res}"] = EqualizedConv2d(nf(r - 1), config.img_channels, 1, activation="linear")

    def block_channels(self) -> dict[int, int]:
        """Resolution -> feature maps of that block's output."""
        return {res: self.to_rgb[f"b{res}"].weight.shape[1] for res in self.resolutions}

    def _input_vector(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise UserInputError(
                f"PGGANGenerator: z must have shape [N, {self.z_dim}], got {tuple(z.shape)}."
            )
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape != (z.shape[0], self.c_dim):
                got = None if c is None else tuple(c.shape)
                raise UserInputError(
                    f"PGGANGenerator is conditional: c must have shape [{z.shape[0]}, {self.c_dim}], "
                    f"got {got}."
                )
            x = torch.cat([z, c.to(z.dtype)], dim=1)
        else:
            x = z
        return pixel_norm(x) if self.config.normalize_latents else x

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        full_resolution: bool = False,
    ) -> torch.Tensor:
        """Generate images at the current stage.

        Args:
            z: latents ``[N, z_dim]`` (standard normal).
            c: one-hot labels ``[N, c_dim]`` (``None`` or ``[N, 0]`` when unconditional).
            truncation_psi, truncation_cutoff, noise_mode: accepted for the common call convention; PGGAN
                has no mapping network and no noise inputs, so only ``truncation_psi = 1`` is valid and
                ``noise_mode`` has no effect.
            full_resolution: if true, upsample the output (nearest neighbour) to ``img_resolution``.

        Returns:
            Images ``[N, img_channels, R, R]`` (``R = current_resolution``, or ``img_resolution`` when
            ``full_resolution``), nominally in ``[-1, 1]`` (not clamped).
        """
        if truncation_psi != 1 or truncation_cutoff is not None:
            raise UserInputError(
                "PGGAN has no mapping network, so truncation is not defined; use truncation_psi=1 and "
                "no cutoff."
            )
        res, alpha = self.current_resolution, self.alpha
        x = self.input(self._input_vector(z, c))
        img = None
        for r in self.resolutions[1:]:
            if r > res:
                break
            if r == res and alpha < 1.0:
                previous = upsample_nearest(self.to_rgb[f"b{r // SCALE}"](x))
                x = self.blocks[f"b{r}"](x)
                img = torch.lerp(previous, self.to_rgb[f"b{r}"](x), alpha)
            else:
                x = self.blocks[f"b{r}"](x)
        if img is None:
            img = self.to_rgb[f"b{res}"](x)
        if full_resolution:
            img = upsample_nearest(img, self.img_resolution // res)
        return img


# ------------------------------------------------------------------------------------------------------------
# Discriminator


class _DiscriminatorBlock(nn.Module):
    """One resolution of D: ``[conv 3x3, conv 3x3, 2x2 average pool]`` (each conv with leaky ReLU)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, activation="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C_in, H, W] -> [N, C_out, H/2, W/2]``."""
        return downsample_box(self.conv1(self.conv0(x)))


class _DiscriminatorOutput(nn.Module):
    """The 4x4 block of D: ``[minibatch stddev, conv 3x3, conv 4x4 (as dense), linear]``."""

    def __init__(self, channels: int, dense_features: int, out_features: int, mbstd_group_size: int) -> None:
        super().__init__()
        self.mbstd_group_size = mbstd_group_size
        extra = 1 if mbstd_group_size > 1 else 0
        self.conv = EqualizedConv2d(channels + extra, channels, 3, activation="lrelu")
        # A 4x4 convolution without padding on a 4x4 map is a dense layer over the flattened map.
        self.conv4x4 = EqualizedLinear(channels * BASE_RESOLUTION**2, dense_features, activation="lrelu")
        self.out = EqualizedLinear(dense_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, 4, 4] -> [N, out_features]``."""
        if self.mbstd_group_size > 1:
            x = minibatch_stddev(x, self.mbstd_group_size)
        x = self.conv(x)
        x = self.conv4x4(x.flatten(1))
        return self.out(x)

    def extra_repr(self) -> str:
        return f"mbstd_group_size={self.mbstd_group_size}"


@register_network
class PGGANDiscriminator(_Growing):
    """PGGAN discriminator ``D(img, c) -> scores [N, 1]`` for images at the current stage resolution ``R``.

    With ``c_dim > 0`` the last layer also has ``c_dim`` auxiliary classifier logits, returned by ``D(img, c,
    return_label_logits=True)`` as ``(scores, label_logits)``. State-dict keys: ``from_rgb.b{R}.*``,
    ``blocks.b{R}.conv{0,1}.*`` and ``output.*``.
    """

    config_class = PGGANDiscriminatorConfig

    def __init__(self, config: PGGANDiscriminatorConfig) -> None:
        super().__init__(config)
        if config.c_dim < 0 or config.img_channels < 1 or config.mbstd_group_size < 1:
            raise UserInputError(
                f"PGGANDiscriminator: need c_dim >= 0, img_channels >= 1, mbstd_group_size >= 1; "
                f"got {config}."
            )
        self.c_dim = config.c_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self._init_stage(config.img_resolution)

        def nf(stage: int) -> int:
            return feature_maps(stage, config.fmap_base, config.fmap_decay, config.fmap_max)

        self.from_rgb = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        for res in self.resolutions:
            r = int(math.log2(res))
            self.from_rgb[f"b{res}"] = EqualizedConv2d(config.img_channels, nf(r - 1), 1, activation="lrelu")
            if res > BASE_RESOLUTION:
                self.blocks[f"b{res}"] = _DiscriminatorBlock(nf(r - 1), nf(r - 2))
        base_log2 = int(math.log2(BASE_RESOLUTION))
        self.output = _DiscriminatorOutput(
            nf(base_log2 - 1), nf(base_log2 - 2), 1 + config.c_dim, config.mbstd_group_size
        )

    def forward(
        self, img: torch.Tensor, c: torch.Tensor | None = None, return_label_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Score images at the current stage.

        Args:
            img: images ``[N, img_channels, R, R]`` in ``[-1, 1]``, ``R = current_resolution``. With minibatch
                stddev on, ``N`` must be a multiple of ``min(mbstd_group_size, N)``.
            c: labels ``[N, c_dim]``; not used by the score (conditioning is through the auxiliary
                classifier).
            return_label_logits: also return the classifier logits ``[N, c_dim]``.

        Returns:
            Scores ``[N, 1]`` (unbounded, WGAN critic values), or ``(scores, label_logits)``.
        """
        res, alpha = self.current_resolution, self.alpha
        expected = (self.img_channels, res, res)
        if img.ndim != 4 or tuple(img.shape[1:]) != expected:
            raise UserInputError(
                f"PGGANDiscriminator at stage {res}x{res}: images must have shape "
                f"[N, {expected[0]}, {res}, {res}], "
                f"got {tuple(img.shape)}. Downsample the images to the current resolution first."
            )
        if c is not None and c.numel() > 0 and c.shape != (img.shape[0], self.c_dim):
            raise UserInputError(
                f"PGGANDiscriminator: c must have shape [N, {self.c_dim}], got {tuple(c.shape)}."
            )
        x = self.from_rgb[f"b{res}"](img)
        for r in reversed(self.resolutions[1:]):
            if r > res:
                continue
            x = self.blocks[f"b{r}"](x)
            if r == res and alpha < 1.0:
                previous = self.from_rgb[f"b{r // SCALE}"](downsample_box(img))
                x = torch.lerp(previous, x, alpha)
        out = self.output(x)
        scores = out[:, :1]
        if return_label_logits:
            return scores, out[:, 1:]
        return scores


# ------------------------------------------------------------------------------------------------------------
# Presets


@register_preset("pggan")
def _pggan() -> Preset:
    """The paper's network (CelebA-HQ, 1024x1024); override ``img_resolution`` for other datasets."""
    return Preset(
        name="pggan",
        G_class=PGGANGenerator,
        G_config=PGGANGeneratorConfig(),
        D_class=PGGANDiscriminator,
        D_config=PGGANDiscriminatorConfig(),
        description="Progressive GAN (Karras et al. 2018), paper configuration: 512 latent, fmap 8192/512.",
    )


@register_preset("pggan-tiny")
def _pggan_tiny() -> Preset:
    """A small PGGAN that grows 4 -> 8 -> 16 -> 32 and trains on a CPU in minutes."""
    # feature maps 64, 64, 32, 16 at 4, 8, 16, 32 px
    g = PGGANGeneratorConfig(z_dim=64, img_resolution=32, fmap_base=256, fmap_max=64)
    d = PGGANDiscriminatorConfig(img_resolution=32, fmap_base=256, fmap_max=64)
    return Preset(
        name="pggan-tiny",
        G_class=PGGANGenerator,
        G_config=g,
        D_class=PGGANDiscriminator,
        D_config=d,
        description="Tiny PGGAN for tests and CPU demos: 32x32, 64 latent, 64/64/32/16 feature maps.",
    )

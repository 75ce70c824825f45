"""StyleGAN3 (alias-free) generators: configurations T (translation) and R (rotation equivariance).

Paper:
    Tero Karras, Miika Aittala, Samuli Laine, Erik Härkönen, Janne Hellsten, Jaakko Lehtinen, Timo Aila.
    "Alias-Free Generative Adversarial Networks". NeurIPS 2021. https://arxiv.org/abs/2106.12423

    @inproceedings{Karras2021,
      author    = {Tero Karras and Miika Aittala and Samuli Laine and Erik H\\"ark\\"onen and
                   Janne Hellsten and Jaakko Lehtinen and Timo Aila},
      title     = {Alias-Free Generative Adversarial Networks},
      booktitle = {Proc. NeurIPS},
      year      = {2021}
    }

This is an independent implementation written from the paper; the numerical conventions (layer schedule,
filter design, normalisations, padding) follow the official networks so that their weights give the same
images (see ``styleforge.convert.official_stylegan3``). Official weights are released by NVIDIA under their
own licence (NVIDIA Source Code License for StyleGAN3, non-commercial); check it before using them.

Architecture (paper sec. 3, app. F):

- the synthesis input is a grid of Fourier features with random frequencies inside a disc of radius
  ``f_c[0]``, rotated and translated by an affine map of ``w`` and by the user transform
  (:class:`SynthesisInput`);
- ``num_layers`` modulated convolutions, each followed by a *filtered* leaky ReLU: upsample by ``m = 2`` (or
  more where the sampling rate grows) with a low-pass filter at the input cutoff, apply the nonlinearity, then
  low-pass at the output cutoff and downsample (:class:`SynthesisLayer`). The cutoffs ``f_c``, minimum
  stop-bands ``f_t``, sampling rates ``s`` and transition half-widths ``f_h`` follow a geometric schedule
  (:func:`layer_schedule`);
- the last ``num_critical`` layers are critically sampled (``f_c = s / 2``) and the network ends with a 1x1
  ToRGB layer; the feature maps carry a 10-pixel margin on each side that the last two layers crop away.

StyleGAN3-T uses 3x3 convolutions and separable Kaiser filters; StyleGAN3-R uses 1x1 convolutions, radially
symmetric (jinc) down-sampling filters and twice the channels.

Module names are descriptive: ``synthesis.input`` and ``synthesis.layers.<i>`` (the official
``L<i>_<size>_<ch>`` name of layer ``i`` is :meth:`StyleGAN3Synthesis.official_layer_name`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.layers.equalized import EqualizedLinear
from styleforge.layers.mapping import MappingNetwork
from styleforge.models.base import Network, aspect_image_size, check_cond_encoding, register_network
from styleforge.models.registry import Preset, register_preset
from styleforge.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2DiscriminatorConfig
from styleforge.ops.filtered_lrelu import filtered_lrelu
from styleforge.ops.filters import design_lowpass_filter, lowpass_numtaps
from styleforge.ops.modulated_conv import modulated_conv2d_stylegan3
from styleforge.utils.errors import UserInputError

__all__ = [
    "StyleGAN3Config",
    "LayerSchedule",
    "layer_schedule",
    "layer_sizes",
    "SynthesisInput",
    "SynthesisLayer",
    "StyleGAN3Synthesis",
    "StyleGAN3Generator",
]

#: gain and negative slope of the leaky ReLU inside the filtered nonlinearity
LRELU_GAIN = math.sqrt(2.0)
LRELU_SLOPE = 0.2
#: the ToRGB layer is a 1x1 convolution in both configurations
TORGB_KERNEL = 1
#: minimum output resolution of the presets (the default schedule needs s >= 16 for its margins to make sense)
MIN_RESOLUTION = 16
NOISE_MODES = ("const", "random", "none")
#: initial output (cos, sin, t_x, t_y) of the input affine: no rotation, no translation
_IDENTITY_ROTATION_TRANSLATION = (1.0, 0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Configuration and layer schedule.


@dataclass(frozen=True)
class StyleGAN3Config:
    """Configuration of a StyleGAN3 generator (paper symbols in brackets).

    Attributes:
        z_dim, c_dim, w_dim: dimensions of the latent z, of the label c (0 = unconditional) and of w.
        img_resolution: output resolution (a power of two >= 16).
        img_channels: output channels.
        mapping_layers: fully connected layers of the mapping network (2 in StyleGAN3).
        mapping_lr_multiplier: learning-rate multiplier of the mapping layers.
        w_avg_beta: decay of the tracked average of w (for truncation).
        channel_base: the number of channels of a layer is ``min(channel_base / 2 / f_c, channel_max)``.
        channel_max: maximum number of channels of a layer.
        num_layers: number of synthesis layers before ToRGB (``N``, 14 in the paper).
        num_critical: how many of the last layers are critically sampled (2).
        first_cutoff: cutoff of the input features ``f_c[0]`` (2).
        first_stopband: minimum stop-band of the first layer ``f_t[0]`` (``2^2.1``).
        last_stopband_rel: minimum stop-band of the last layer relative to its cutoff, ``f_t[N] / f_c[N]``
            (``2^0.3``).
        margin_size: extra pixels on each side of the intermediate feature maps (10).
        output_scale: the output of ToRGB is multiplied by this (0.25).
        num_fp16_res: layers whose sampling rate exceeds ``img_resolution / 2^num_fp16_res`` run in float16 on
            CUDA.
        conv_kernel: convolution kernel size (3 for T, 1 for R); ToRGB is always 1x1.
        filter_size: taps of the low-pass filters per sample at the input rate (``n = 6``).
        lrelu_upsampling: oversampling factor of the nonlinearity (``m = 2``).
        use_radial_filters: radially symmetric down-sampling filters (R) in the non-critically sampled layers.
        conv_clamp: clamp of the pre-activations, ``None`` = no clamping.
        magnitude_ema_beta: decay of each layer's running mean of the squared input.
        img_aspect: ``(W, H)`` aspect ratio of a non-square canvas (e.g. ``(4, 3)``), ``None`` = square. The
            longer side is ``img_resolution`` and carries the layer schedule; the shorter side samples the same
            frequencies at the same rates over a shorter extent (see :func:`layer_sizes`).
        cond_encoding: what ``c`` holds: ``class`` (one-hot), ``multi-label`` (multi-hot) or ``continuous``
            attribute values (:mod:`styleforge.data.labels`).
    """

    z_dim: int = 512
    c_dim: int = 0
    w_dim: int = 512
    img_resolution: int = 256
    img_channels: int = 3
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2.0
    first_stopband: float = 2**2.1
    last_stopband_rel: float = 2**0.3
    margin_size: int = 10
    output_scale: float = 0.25
    num_fp16_res: int = 4
    conv_kernel: int = 3
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False
    conv_clamp: float | None = 256.0
    magnitude_ema_beta: float = 0.999
    img_aspect: tuple[int, int] | None = None
    cond_encoding: str = "class"  # What c holds: 'class' (one-hot), 'multi-label' (multi-hot) or 'continuous'.

    def __post_init__(self) -> None:
        res = self.img_resolution
        if res < MIN_RESOLUTION or res & (res - 1) != 0:
            raise UserInputError(
                f"StyleGAN3 img_resolution must be a power of two >= {MIN_RESOLUTION}, got {res}; "
                "resize the dataset or pick e.g. 256."
            )
        if self.z_dim <= 0 or self.w_dim <= 0 or self.c_dim < 0 or self.img_channels <= 0:
            raise UserInputError(
                f"z_dim, w_dim and img_channels must be positive and c_dim >= 0; got z_dim={self.z_dim}, "
                f"w_dim={self.w_dim}, c_dim={self.c_dim}, img_channels={self.img_channels}"
            )
        if not 0 <= self.num_critical < self.num_layers:
            raise UserInputError(
                f"num_critical must lie in [0, num_layers); got num_critical={self.num_critical}, "
                f"num_layers={self.num_layers}"
            )
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise UserInputError(f"conv_kernel must be a positive odd number, got {self.conv_kernel}")
        if self.channel_base <= 0 or self.channel_max <= 0:
            raise UserInputError("channel_base and channel_max must be positive")
        check_cond_encoding(self.cond_encoding)
        if self.img_aspect is not None:
            sched = layer_schedule(
                res, self.img_channels, self.channel_base, self.channel_max, self.num_layers, self.num_critical,
                self.first_cutoff, self.first_stopband, self.last_stopband_rel, self.margin_size,
            )  # fmt: skip
            layer_sizes(sched, res, self.img_aspect, self.margin_size)  # raises on a fractional canvas


@dataclass(frozen=True)
class LayerSchedule:
    """Per-layer hyperparameters; index 0 = the synthesis input, ``N`` = ToRGB (arrays of length ``N + 1``).

    Attributes:
        cutoffs: cutoff frequencies ``f_c``.
        stopbands: minimum stop-band frequencies ``f_t``.
        sampling_rates: sampling rates ``s`` (powers of two).
        half_widths: transition band half-widths ``f_h = max(f_t, s / 2) - f_c``.
        sizes: spatial sizes of the feature maps (``s`` plus the margins; the last two equal the resolution).
        channels: channel counts (the last equals ``img_channels``).
    """

    cutoffs: np.ndarray
    stopbands: np.ndarray
    sampling_rates: np.ndarray
    half_widths: np.ndarray
    sizes: np.ndarray
    channels: np.ndarray


def layer_schedule(
    img_resolution: int,
    img_channels: int,
    channel_base: float,
    channel_max: int,
    num_layers: int = 14,
    num_critical: int = 2,
    first_cutoff: float = 2.0,
    first_stopband: float = 2**2.1,
    last_stopband_rel: float = 2**0.3,
    margin_size: int = 10,
) -> LayerSchedule:
    """The geometric layer schedule of the paper (sec. 3.2 and fig. 4b, app. F.2).

    ``f_c`` and ``f_t`` grow geometrically from the first values to ``f_c[N] = img_resolution / 2`` and
    ``f_t[N] = f_c[N] * last_stopband_rel`` over the first ``N - num_critical`` layers and stay constant after
    that; ``s`` is the smallest power of two >= ``2 f_t`` (capped at the resolution).
    """
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1.0)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return LayerSchedule(cutoffs, stopbands, sampling_rates, half_widths, sizes, channels)


def layer_sizes(
    schedule: LayerSchedule, img_resolution: int, img_aspect: tuple[int, int] | None, margin_size: int
) -> list[tuple[int, int]]:
    """``(W, H)`` of every feature map (index 0 = the input) of a possibly non-square canvas.

    The sampling rate ``s`` of a layer is the number of samples per unit along *both* axes (so the filters and
    the frequency content stay isotropic and translation/rotation equivariance holds); a ``W:H`` canvas spans
    ``W / max(W, H)`` by ``H / max(W, H)`` units and each axis gets the same margins. Square canvases give
    ``schedule.sizes`` on both axes. Raises a :class:`UserInputError` when a layer's canvas is fractional.
    """
    width, height = aspect_image_size(img_resolution, img_aspect)
    rel_w, rel_h = width / img_resolution, height / img_resolution
    sizes = []
    for idx, rate in enumerate(schedule.sampling_rates):
        if idx >= len(schedule.sampling_rates) - 2:  # the critically sampled end: exactly the image
            sizes.append((width, height))
            continue
        w, h = rate * rel_w, rate * rel_h
        if w != int(w) or h != int(h):
            raise UserInputError(
                f"StyleGAN3 layer {idx} samples {rate:g} per unit; a {width}x{height} canvas would need "
                f"{w:g}x{h:g} samples there. Use a ratio whose shorter side divides the lowest sampling rate "
                f"({schedule.sampling_rates.min():g}), such as 4:3, 3:4 or 2:1."
            )
        sizes.append((int(w) + 2 * margin_size, int(h) + 2 * margin_size))
    return sizes


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(W, H)`` from a side length or a pair."""
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


# ----------------------------------------------------------------------------------------------------------
# Building blocks.


class SynthesisInput(nn.Module):
    """Fourier-feature input of the synthesis network (paper sec. 3.1 and app. D/F).

    ``channels`` sinusoids with random frequencies ``freqs`` (uniform direction, radius at most
    ``bandwidth = f_c[0]``) and phases ``phases`` are sampled on a ``size x size`` grid at ``sampling_rate``
    samples per unit (the visible image spans one unit). Per sample, an affine layer maps ``w`` to a rotation
    angle and a translation of the coordinate frame; the user ``transform`` (3x3, a persistent buffer or a
    call argument) is applied on top. Frequencies close to ``sampling_rate / 2`` are faded out. A learned
    ``[channels, channels]`` mixing matrix ``weight`` follows.

    Output: ``[N, channels, size, size]``, or ``[N, channels, H, W]`` for ``size = (W, H)`` (a non-square
    canvas spanning ``W / sampling_rate`` by ``H / sampling_rate`` units).
    """

    def __init__(
        self, w_dim: int, channels: int, size: int | tuple[int, int], sampling_rate: float, bandwidth: float
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size_wh = _pair(size)
        self.size = self.size_wh[0] if self.size_wh[0] == self.size_wh[1] else self.size_wh
        self.sampling_rate = float(sampling_rate)
        self.bandwidth = float(bandwidth)

        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        # Map the Gaussian radii to a distribution on the unit disc, then scale to the bandwidth.
        freqs = freqs / (radii * radii.square().exp().pow(0.25))
        self.register_buffer("freqs", freqs * bandwidth)
        self.register_buffer("phases", torch.rand([channels]) - 0.5)
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        # w -> (cos, sin, tx, ty); initialised to the identity transform.
        self.affine = EqualizedLinear(w_dim, 4, weight_init=0.0, bias_init=_IDENTITY_ROTATION_TRANSLATION)
        self.register_buffer("transform", torch.eye(3))

    def forward(self, w: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        """Fourier features ``[N, C, size, size]`` for ``w`` ``[N, w_dim]``.

        ``transform`` (``[3, 3]`` or ``[N, 3, 3]``) overrides the ``transform`` buffer for this call.
        """
        batch = w.shape[0]
        if transform is None:
            transform = self.transform
        transform = torch.as_tensor(transform, dtype=torch.float32, device=w.device)
        if transform.shape[-2:] != (3, 3) or transform.ndim not in (2, 3):
            raise UserInputError(
                f"transform must have shape [3, 3] or [N, 3, 3], got {list(transform.shape)}"
            )
        if transform.ndim == 3 and transform.shape[0] not in (1, batch):
            raise UserInputError(
                f"a batch of transforms must have one matrix per sample: got {transform.shape[0]} "
                f"for {batch} samples"
            )
        transforms = transform.unsqueeze(0) if transform.ndim == 2 else transform  # [N or 1, 3, 3]

        # Rotation and translation predicted from w; the rotation part is normalised to a unit vector.
        t = self.affine(w)  # [N, 4] = (r_c, r_s, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        eye = torch.eye(3, device=w.device).unsqueeze(0).repeat([batch, 1, 1])
        m_rot = eye.clone()
        m_rot[:, 0, 0] = t[:, 0]
        m_rot[:, 0, 1] = -t[:, 1]
        m_rot[:, 1, 0] = t[:, 1]
        m_rot[:, 1, 1] = t[:, 0]
        m_trans = eye.clone()
        m_trans[:, 0, 2] = -t[:, 2]
        m_trans[:, 1, 2] = -t[:, 3]
        transforms = m_rot @ m_trans @ transforms  # [N, 3, 3]

        # Transform the frequencies and phases:
        # sin(2 pi (f . (A x + b) + p)) = sin(2 pi ((A^T f) . x + f . b + p)).
        freqs = self.freqs.unsqueeze(0)  # [1, C, 2]
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)  # [N, C]
        freqs = freqs @ transforms[:, :2, :2]  # [N, C, 2]

        # Fade out the frequencies that get close to the Nyquist rate after the transform.
        amplitudes = (
            1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)
        ).clamp(0, 1)

        # Sample coordinates: pixel centres of a W x H grid spanning W / sampling_rate by H / sampling_rate units.
        width, height = self.size_wh
        half_w, half_h = 0.5 * width / self.sampling_rate, 0.5 * height / self.sampling_rate
        theta = torch.zeros(1, 2, 3, device=w.device)  # filled in place: no host-to-device copy (a CUDA sync)
        theta[0, 0, 0], theta[0, 1, 1] = half_w, half_h
        grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)  # [1, H, W, 2]

        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [N, H, W, C]
        x = x + phases.unsqueeze(1).unsqueeze(2)
        x = torch.sin(x * (2 * math.pi)) * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, channels={self.channels}, size={self.size}, "
            f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}"
        )


class SynthesisLayer(nn.Module):
    """One alias-free layer: modulated convolution, then the filtered leaky ReLU (paper sec. 3.2, fig. 4a).

    The input (sampling rate ``s_in``, cutoff ``f_c,in``) is convolved, upsampled to
    ``s_tmp = max(s_in, s_out) * m`` with a low-pass at ``f_c,in``, passed through the leaky ReLU, low-passed
    at ``f_c,out`` and downsampled to ``s_out``. The ToRGB layer (``is_torgb``) has no filtering, no
    nonlinearity and no demodulation.
    """

    def __init__(
        self,
        w_dim: int,                         # Intermediate latent (W) dimensionality.
        is_torgb: bool,                     # Is this the final ToRGB layer?
        is_critically_sampled: bool,        # Does this layer use critical sampling (f_c = s / 2)?
        use_fp16: bool,                     # Run in float16 on CUDA?
        in_channels: int,                   # Input channels.
        out_channels: int,                  # Output channels.
        in_size: int | tuple[int, int],     # Input spatial size (including margins), or (W, H).
        out_size: int | tuple[int, int],    # Output spatial size (including margins), or (W, H).
        in_sampling_rate: int,              # Input sampling rate (s).
        out_sampling_rate: int,             # Output sampling rate (s).
        in_cutoff: float,                   # Input cutoff frequency (f_c).
        out_cutoff: float,                  # Output cutoff frequency (f_c).
        in_half_width: float,               # Input transition band half-width (f_h).
        out_half_width: float,              # Output transition band half-width (f_h).
        conv_kernel: int = 3,               # Convolution kernel size (ignored for ToRGB, which is 1x1).
        filter_size: int = 6,               # Low-pass filter taps per sample at the input rate (n).
        lrelu_upsampling: int = 2,          # Oversampling of the nonlinearity (m).
        use_radial_filters: bool = False,   # Radially symmetric down-sampling filter (R)?
        conv_clamp: float | None = 256.0,   # Clamp of the pre-activations, None = off.
        magnitude_ema_beta: float = 0.999,  # Decay of the running input magnitude.
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size_wh, self.out_size_wh = _pair(in_size), _pair(out_size)
        # ints for square layers (as always), (W, H) pairs for a non-square canvas
        self.in_size = self.in_size_wh[0] if self.in_size_wh[0] == self.in_size_wh[1] else self.in_size_wh
        self.out_size = self.out_size_wh[0] if self.out_size_wh[0] == self.out_size_wh[1] else self.out_size_wh
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (
            1 if is_torgb else lrelu_upsampling
        )
        self.in_cutoff = float(in_cutoff)
        self.out_cutoff = float(out_cutoff)
        self.in_half_width = float(in_half_width)
        self.out_half_width = float(out_half_width)
        self.conv_kernel = TORGB_KERNEL if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta
        self.ops_impl = "auto"

        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel])
        )
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        # Resampling factors and filters (derived from the config: non-persistent).
        self.up_factor = int(np.rint(self.tmp_sampling_rate / in_sampling_rate))
        self.down_factor = int(np.rint(self.tmp_sampling_rate / out_sampling_rate))
        if in_sampling_rate * self.up_factor != self.tmp_sampling_rate or (
            out_sampling_rate * self.down_factor != self.tmp_sampling_rate
        ):
            raise ValueError(
                "sampling rates must divide the oversampled rate; use power-of-two sampling rates"
            )
        self.up_taps = lowpass_numtaps(filter_size, self.up_factor, enabled=not is_torgb)
        self.down_taps = lowpass_numtaps(filter_size, self.down_factor, enabled=not is_torgb)
        self.down_radial = use_radial_filters and not is_critically_sampled
        up_filter = design_lowpass_filter(
            self.up_taps, self.in_cutoff, self.in_half_width * 2, self.tmp_sampling_rate, radial=False
        )
        down_filter = design_lowpass_filter(
            self.down_taps,
            self.out_cutoff,
            self.out_half_width * 2,
            self.tmp_sampling_rate,
            radial=self.down_radial,
        )
        self.register_buffer("up_filter", up_filter, persistent=False)
        self.register_buffer("down_filter", down_filter, persistent=False)
        # Runtime knob, not part of the config: False evaluates the modulated convolution with a shared kernel
        # (same function; the ONNX export with a dynamic batch needs it).
        self.fused_modconv = True

        # Padding so that the output has out_size samples, with the sample positions of the symmetric
        # interpretation (paper app. C.3: pixel centres at half-integer coordinates).
        # Computed per axis: (x_lo, x_hi, y_lo, y_hi); both axes agree on a square canvas.
        padding = []
        for in_len, out_len in zip(self.in_size_wh, self.out_size_wh, strict=True):
            pad_total = (out_len - 1) * self.down_factor + 1  # wanted size before downsampling
            pad_total -= (in_len + self.conv_kernel - 1) * self.up_factor  # size after the upsampling
            pad_total += self.up_taps + self.down_taps - 2  # lost to the two filters
            pad_lo = (pad_total + self.up_factor) // 2
            padding += [int(pad_lo), int(pad_total - pad_lo)]
        self.padding = tuple(padding)

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, update_emas: bool = False, force_fp32: bool = False
    ) -> torch.Tensor:
        """``x [N, C_in, in_size, in_size]``, ``w [N, w_dim]`` -> ``[N, C_out, out_size, out_size]`` (``H, W`` of
        the ``(W, H)`` sizes on a non-square canvas)."""
        if update_emas:
            magnitude = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()

        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel**2))

        use_half = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        dtype = torch.float16 if use_half else torch.float32
        x = modulated_conv2d_stylegan3(
            x.to(dtype),
            self.weight,
            styles,
            demodulate=not self.is_torgb,
            padding=self.conv_kernel - 1,
            input_gain=input_gain,
            fused=self.fused_modconv,
            impl=self.ops_impl,
        )
        return filtered_lrelu(
            x,
            fu=self.up_filter,
            fd=self.down_filter,
            b=self.bias.to(x.dtype),
            up=self.up_factor,
            down=self.down_factor,
            padding=self.padding,
            gain=1.0 if self.is_torgb else LRELU_GAIN,
            slope=1.0 if self.is_torgb else LRELU_SLOPE,
            clamp=self.conv_clamp,
            impl=self.ops_impl,
        )

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, is_torgb={self.is_torgb}, critically_sampled={self.is_critically_sampled}, "
            f"use_fp16={self.use_fp16}, in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"in_size={self.in_size}, out_size={self.out_size}, "
            f"in_sampling_rate={self.in_sampling_rate:g}, out_sampling_rate={self.out_sampling_rate:g}, "
            f"in_cutoff={self.in_cutoff:.4g}, out_cutoff={self.out_cutoff:.4g}, "
            f"in_half_width={self.in_half_width:.4g}, out_half_width={self.out_half_width:.4g}, "
            f"up={self.up_factor}, down={self.down_factor}, radial={self.down_radial}"
        )


class StyleGAN3Synthesis(nn.Module):
    """The synthesis network ``g(ws) -> img``: Fourier input, ``num_layers`` alias-free layers and ToRGB.

    Reads the synthesis fields of ``config`` (a :class:`StyleGAN3Config` or any object with the same
    attributes, e.g. a StyleGAN-XL config). ``num_ws = num_layers + 2``: ``ws[:, 0]`` drives the input
    transform, ``ws[:, i + 1]`` layer ``i``.
    """

    def __init__(self, config: StyleGAN3Config) -> None:
        super().__init__()
        c = config
        self.w_dim = c.w_dim
        self.img_resolution = c.img_resolution
        img_aspect = getattr(c, "img_aspect", None)  # a config without the field: square
        self.img_channels = c.img_channels
        self.num_layers = c.num_layers
        self.num_critical = c.num_critical
        self.num_ws = c.num_layers + 2
        self.output_scale = c.output_scale
        sched = layer_schedule(
            c.img_resolution,
            c.img_channels,
            c.channel_base,
            c.channel_max,
            c.num_layers,
            c.num_critical,
            c.first_cutoff,
            c.first_stopband,
            c.last_stopband_rel,
            c.margin_size,
        )
        self.schedule = sched
        sizes = layer_sizes(sched, c.img_resolution, img_aspect, c.margin_size)

        self.input = SynthesisInput(
            w_dim=c.w_dim,
            channels=int(sched.channels[0]),
            size=sizes[0],
            sampling_rate=float(sched.sampling_rates[0]),
            bandwidth=float(sched.cutoffs[0]),
        )
        layers = []
        for idx in range(c.num_layers + 1):
            prev = max(idx - 1, 0)
            layers.append(
                SynthesisLayer(
                    w_dim=c.w_dim,
                    is_torgb=idx == c.num_layers,
                    is_critically_sampled=idx >= c.num_layers - c.num_critical,
                    use_fp16=bool(sched.sampling_rates[idx] * 2**c.num_fp16_res > c.img_resolution),
                    in_channels=int(sched.channels[prev]),
                    out_channels=int(sched.channels[idx]),
                    in_size=sizes[prev],
                    out_size=sizes[idx],
                    in_sampling_rate=int(sched.sampling_rates[prev]),
                    out_sampling_rate=int(sched.sampling_rates[idx]),
                    in_cutoff=float(sched.cutoffs[prev]),
                    out_cutoff=float(sched.cutoffs[idx]),
                    in_half_width=float(sched.half_widths[prev]),
                    out_half_width=float(sched.half_widths[idx]),
                    conv_kernel=c.conv_kernel,
                    filter_size=c.filter_size,
                    lrelu_upsampling=c.lrelu_upsampling,
                    use_radial_filters=c.use_radial_filters,
                    conv_clamp=c.conv_clamp,
                    magnitude_ema_beta=c.magnitude_ema_beta,
                )
            )
        self.layers = nn.ModuleList(layers)

    @property
    def img_width(self) -> int:
        """Width of the output images (the last layer's; ``img_resolution`` unless the canvas is non-square)."""
        return self.layers[-1].out_size_wh[0]

    @property
    def img_height(self) -> int:
        """Height of the output images."""
        return self.layers[-1].out_size_wh[1]

    def official_layer_name(self, idx: int) -> str:
        """The official module name of layer ``idx``: ``L<idx>_<out_size>_<out_channels>``."""
        layer = self.layers[idx]
        return f"L{idx}_{layer.out_size}_{layer.out_channels}"

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        update_emas: bool = False,
        transform: torch.Tensor | None = None,
        force_fp32: bool = False,
    ) -> torch.Tensor:
        """Synthesise images.

        Args:
            ws: ``[N, num_ws, w_dim]`` per-layer latents.
            noise_mode: accepted for API compatibility with StyleGAN2; StyleGAN3 has no noise inputs.
            update_emas: update the magnitude EMAs of the layers (training).
            transform: ``[3, 3]`` or ``[N, 3, 3]`` input transform for this call (see
                :func:`styleforge.transform_matrix`); ``None`` = use the ``synthesis.input.transform`` buffer.
            force_fp32: never use float16.

        Returns:
            ``[N, img_channels, img_height, img_width]`` float32, roughly in ``[-1, 1]`` (square unless the
            config sets ``img_aspect``).
        """
        if noise_mode not in NOISE_MODES:
            raise UserInputError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise UserInputError(
                f"synthesis expects ws of shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}"
            )
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0], transform=transform)
        for layer, w in zip(self.layers, ws[1:], strict=True):
            x = layer(x, w, update_emas=update_emas, force_fp32=force_fp32)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


# ----------------------------------------------------------------------------------------------------------
# Generator.


@register_network
class StyleGAN3Generator(Network):
    """StyleGAN3 generator ``G(z, c) = synthesis(mapping(z, c))``.

    Attributes: ``z_dim, c_dim, w_dim, img_resolution, img_channels, num_ws``, ``mapping`` (the shared
    :class:`~styleforge.layers.mapping.MappingNetwork`) and ``synthesis`` (:class:`StyleGAN3Synthesis`).
    """

    config_class = StyleGAN3Config

    def __init__(self, config: StyleGAN3Config) -> None:
        super().__init__(config)
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.synthesis = self._build_synthesis(config)
        self.num_ws = self.synthesis.num_ws
        self.mapping = self._build_mapping(config)

    @property
    def img_width(self) -> int:
        """Width of the output images (``img_resolution`` unless ``img_aspect`` makes them non-square)."""
        return self.synthesis.img_width

    @property
    def img_height(self) -> int:
        """Height of the output images."""
        return self.synthesis.img_height

    def _build_synthesis(self, config: StyleGAN3Config) -> StyleGAN3Synthesis:
        return StyleGAN3Synthesis(config)

    def _build_mapping(self, config: StyleGAN3Config) -> nn.Module:
        return MappingNetwork(
            z_dim=config.z_dim,
            c_dim=config.c_dim,
            w_dim=config.w_dim,
            num_ws=self.num_ws,
            num_layers=config.mapping_layers,
            lr_multiplier=config.mapping_lr_multiplier,
            w_avg_beta=config.w_avg_beta,
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        update_emas: bool = False,
        transform: torch.Tensor | None = None,
        force_fp32: bool = False,
    ) -> torch.Tensor:
        """Generate images.

        Args:
            z: ``[N, z_dim]`` latents.
            c: ``[N, c_dim]`` labels (``None`` or ``[N, 0]`` when unconditional).
            truncation_psi, truncation_cutoff: the truncation trick (see ``MappingNetwork``).
            noise_mode: accepted for compatibility; StyleGAN3 has no noise.
            update_emas: update ``w_avg`` and the magnitude EMAs (training).
            transform: ``[3, 3]`` or ``[N, 3, 3]`` input transform for this call; ``None`` = the buffer.
            force_fp32: never use float16.

        Returns:
            ``[N, img_channels, img_resolution, img_resolution]`` float32 images, roughly in ``[-1, 1]``.
        """
        if c is None:
            c = torch.zeros([z.shape[0], self.c_dim], device=z.device)
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesis(
            ws, noise_mode=noise_mode, update_emas=update_emas, transform=transform, force_fp32=force_fp32
        )


# ----------------------------------------------------------------------------------------------------------
# Presets.

_T_CHANNEL_BASE, _T_CHANNEL_MAX = 32768, 512
_R_CHANNEL_BASE, _R_CHANNEL_MAX = _T_CHANNEL_BASE * 2, _T_CHANNEL_MAX * 2
_DEFAULT_RESOLUTION = 256
# Tiny variants for tests: 16 px, <= 32 channels (64 for R), 6 layers + ToRGB, 2-layer 32-d mapping; a
# forward pass takes well under a second on one CPU core.
_TINY = dict(z_dim=32, w_dim=32, img_resolution=16, channel_base=512, channel_max=32, num_layers=6)


def _preset(name: str, g: StyleGAN3Config, d_base: int, d_max: int, description: str) -> Preset:
    """G plus the StyleGAN2 discriminator that StyleGAN3 trains against (resnet, minibatch-stddev group 4)."""
    d = StyleGAN2DiscriminatorConfig(
        c_dim=g.c_dim,
        img_resolution=g.img_resolution,
        img_channels=g.img_channels,
        channel_base=d_base,
        channel_max=d_max,
        img_aspect=g.img_aspect,
    )
    return Preset(name, StyleGAN3Generator, g, StyleGAN2Discriminator, d, description)


@register_preset("stylegan3-t")
def stylegan3_t() -> Preset:
    """StyleGAN3-T (translation equivariant), 256 px; override ``img_resolution`` for other sizes."""
    g = StyleGAN3Config(
        img_resolution=_DEFAULT_RESOLUTION, channel_base=_T_CHANNEL_BASE, channel_max=_T_CHANNEL_MAX
    )
    return _preset(
        "stylegan3-t", g, _T_CHANNEL_BASE, _T_CHANNEL_MAX, "StyleGAN3-T: 3x3 convs, Kaiser filters"
    )


@register_preset("stylegan3-r")
def stylegan3_r() -> Preset:
    """StyleGAN3-R (translation and rotation equivariant): 1x1 convs, radial filters, doubled channels."""
    g = StyleGAN3Config(
        img_resolution=_DEFAULT_RESOLUTION,
        channel_base=_R_CHANNEL_BASE,
        channel_max=_R_CHANNEL_MAX,
        conv_kernel=1,
        use_radial_filters=True,
    )
    return _preset(
        "stylegan3-r", g, _T_CHANNEL_BASE, _T_CHANNEL_MAX, "StyleGAN3-R: 1x1 convs, radial filters"
    )


@register_preset("stylegan3-t-tiny")
def stylegan3_t_tiny() -> Preset:
    """A tiny StyleGAN3-T for tests (16 px, <= 32 channels)."""
    g = StyleGAN3Config(**_TINY)
    return _preset("stylegan3-t-tiny", g, 256, 32, "tiny StyleGAN3-T for tests")


@register_preset("stylegan3-r-tiny")
def stylegan3_r_tiny() -> Preset:
    """A tiny StyleGAN3-R for tests (16 px, doubled channels as in R, 1x1 convs, radial filters)."""
    g = StyleGAN3Config(
        **{**_TINY, "channel_base": _TINY["channel_base"] * 2, "channel_max": _TINY["channel_max"] * 2},
        conv_kernel=1,
        use_radial_filters=True,
    )
    return _preset("stylegan3-r-tiny", g, 256, 32, "tiny StyleGAN3-R for tests")

"""Equivariance metrics EQ-T, EQ-T_frac and EQ-R of StyleGAN3 (Karras et al. 2021, sec. 3 and app. E).

For a generator whose synthesis input can be transformed (StyleGAN3's ``transform``), the metrics compare

- the image generated with a *transformed input* ``g(t[z])``, and
- the original image transformed *after* generation ``t[g(z)]``,

as a PSNR in decibels over the pixels where both are valid:

    EQ = 10 log10(I_max^2 / MSE),   I_max = 2 (images span [-1, 1]),

with the squared errors and the valid-pixel counts summed over all samples before the ratio is taken. Higher
is more equivariant. The three variants:

- **EQ-T** (``eqt50k_int``): translation by a whole number of pixels, ``t`` uniform in ``[-1/8, 1/8]`` of the
  image per axis rounded to pixels; the output is shifted exactly and the uncovered border is masked out.
- **EQ-T_frac** (``eqt50k_frac``): sub-pixel translation; the output is shifted with a separable Lanczos-3
  (windowed sinc) resampling filter, and pixels within the filter support of the border are masked out.
- **EQ-R** (``eqr50k``): rotation by an angle uniform in ``[-180, 180]`` degrees. The reference output is
  rotated with an ideal band-limited resampler (4x upsampling with a windowed 2-D sinc filter designed for the
  rotation, then bilinear sampling); since a rotation cannot be band-limited exactly on a pixel grid, the
  generated image is passed through the matching "pseudo-rotation" filter before comparing (paper app. E).

These follow the paper's definitions and the conventions of the official tools (translation limit 0.125, full
rotation range, Lanczos a = 3), so the numbers are comparable with published ones.

**StyleGAN2.** A StyleGAN2 generator starts from a learned constant and has no input that can be translated or
rotated, so the metrics are undefined for it (the official tools refuse such a generator too). For
architecture comparisons we use the first step of the paper's ladder from StyleGAN2 to StyleGAN3 (config B,
"Fourier features"): :func:`with_fourier_input` replaces the constant 4x4 input of a StyleGAN2 synthesis
network with transformable Fourier features and changes nothing else. This is
meaningful for networks built (or trained) that way, e.g. random initialisations compared against StyleGAN3 on
the same small configuration; it is *not* meaningful for a StyleGAN2 checkpoint trained with the constant
input, and the registered metrics refuse a generator without an input transform.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.metrics.registry import MetricContext, register_metric
from styleforge.models.base import image_size
from styleforge.ops.transforms import rotation_matrix
from styleforge.ops.upfirdn2d import filter2d, upsample2d
from styleforge.utils.errors import UserInputError

__all__ = [
    "EquivarianceConfig",
    "PEAK_TO_PEAK",
    "sinc",
    "lanczos_window",
    "apply_integer_translation",
    "apply_fractional_translation",
    "affine_bandlimit_filter",
    "apply_affine_transformation",
    "apply_fractional_rotation",
    "apply_fractional_pseudo_rotation",
    "psnr_db",
    "compute_equivariance",
    "supports_input_transform",
    "with_fourier_input",
]

#: pixel-value range of generated images, [-1, 1]: the PSNR peak signal is 2
PEAK_TO_PEAK = 2.0
#: default number of samples in the metric names (``eqt50k_int``)
DEFAULT_NUM_SAMPLES = 50_000
#: EQ-T: translations up to this fraction of the image per axis
TRANSLATE_MAX = 0.125
#: EQ-R: rotations up to this fraction of half a turn (1 = +-180 degrees)
ROTATE_MAX = 1.0
#: Lanczos window size of the resampling filters
LANCZOS_A = 3
#: the affine resampler works at this multiple of the image resolution
AFFINE_UPSAMPLING = 4
#: the rotation filter is designed on a grid of 2 * this many input pixels per axis, then cropped
AFFINE_DESIGN_TAPS = 64
#: the transforms are drawn from their own random stream, seeded with ``seed + this``
_TRANSFORM_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class EquivarianceConfig:
    """Options of :func:`compute_equivariance`.

    Attributes:
        num_samples: number of generated images per metric.
        batch_size: images per forward pass.
        translate_max: largest translation as a fraction of the image (per axis).
        rotate_max: largest rotation as a fraction of pi.
        eqt_int, eqt_frac, eqr: which metrics to compute.
        seed: seed of the latents, labels and transforms.
        truncation_psi: truncation of the sampled ws.
    """

    num_samples: int = DEFAULT_NUM_SAMPLES
    batch_size: int = 16
    translate_max: float = TRANSLATE_MAX
    rotate_max: float = ROTATE_MAX
    eqt_int: bool = False
    eqt_frac: bool = False
    eqr: bool = False
    seed: int = 0
    truncation_psi: float = 1.0

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.batch_size < 1:
            raise UserInputError(
                f"num_samples and batch_size must be >= 1, got {self.num_samples}, {self.batch_size}"
            )
        if not (self.eqt_int or self.eqt_frac or self.eqr):
            raise UserInputError("choose at least one of eqt_int, eqt_frac, eqr")


# ----------------------------------------------------------------------------------------------------------
# Signal-processing helpers (pure functions, NCHW).


def sinc(x: torch.Tensor) -> torch.Tensor:
    """Normalised sinc ``sin(pi x) / (pi x)`` with ``sinc(0) = 1``."""
    y = (x * math.pi).abs()
    safe = torch.where(y < 1e-30, torch.ones_like(y), y)
    return torch.where(y < 1e-30, torch.ones_like(y), torch.sin(safe) / safe)


def lanczos_window(x: torch.Tensor, a: float) -> torch.Tensor:
    """Lanczos window ``sinc(x / a)`` for ``|x| < a``, 0 outside."""
    u = x.abs() / a
    return torch.where(u < 1, sinc(u), torch.zeros_like(u))


def apply_integer_translation(x: torch.Tensor, tx: torch.Tensor | float, ty: torch.Tensor | float):
    """Shift images by ``(tx, ty)`` image sizes rounded to whole pixels; the uncovered border is zero.

    Args:
        x: ``[N, C, H, W]``.
        tx, ty: translation as a fraction of the width and height (content moves right/down for
            positive values).

    Returns:
        ``(shifted, mask)``, both ``[N, C, H, W]``; ``mask`` is 1 where ``shifted`` holds a pixel of ``x``.
    """
    _, _, height, width = x.shape
    ix = int(round(float(tx) * width))
    iy = int(round(float(ty) * height))
    out = torch.zeros_like(x)
    mask = torch.zeros_like(x)
    if abs(ix) < width and abs(iy) < height:
        src = x[:, :, max(-iy, 0) : height + min(-iy, 0), max(-ix, 0) : width + min(-ix, 0)]
        out[:, :, max(iy, 0) : height + min(iy, 0), max(ix, 0) : width + min(ix, 0)] = src
        mask[:, :, max(iy, 0) : height + min(iy, 0), max(ix, 0) : width + min(ix, 0)] = 1
    return out, mask


def _lanczos_taps(frac: torch.Tensor, a: int, device: torch.device) -> torch.Tensor:
    """Lanczos-a interpolation taps for a shift by ``frac`` in [0, 1), normalised to sum 1: ``[2a]``."""
    taps = torch.arange(a * 2, device=device, dtype=torch.float32) - (a - 1)
    f = sinc(taps - frac) * sinc((taps - frac) / a)
    return f / f.sum()


def apply_fractional_translation(
    x: torch.Tensor, tx: torch.Tensor | float, ty: torch.Tensor | float, a: int = LANCZOS_A
):
    """Shift images by ``(tx, ty)`` image sizes with sub-pixel accuracy (separable Lanczos-``a`` resampling).

    Returns:
        ``(shifted, mask)``, ``[N, C, H, W]`` each; the mask excludes pixels whose filter support
        leaves the image.
    """
    _, _, height, width = x.shape
    sx = torch.as_tensor(tx, dtype=torch.float32) * width
    sy = torch.as_tensor(ty, dtype=torch.float32) * height
    ix, iy = int(torch.floor(sx)), int(torch.floor(sy))
    fx, fy = (sx - ix).to(x.device), (sy - iy).to(x.device)
    b = a - 1
    out = torch.zeros_like(x)
    zx0, zy0 = max(ix - b, 0), max(iy - b, 0)
    zx1, zy1 = min(ix + a, 0) + width, min(iy + a, 0) + height
    if zx0 < zx1 and zy0 < zy1:
        filt_x = _lanczos_taps(fx, a, x.device).unsqueeze(0)  # [1, 2a]: filters along x only
        filt_y = _lanczos_taps(fy, a, x.device).unsqueeze(1)  # [2a, 1]: along y only
        y = filter2d(x, filt_x.to(x.dtype), padding=(b, a, 0, 0))
        y = filter2d(y, filt_y.to(x.dtype), padding=(0, 0, b, a))
        y = y[
            :,
            :,
            max(b - iy, 0) : height + b + a + min(-iy - a, 0),
            max(b - ix, 0) : width + b + a + min(-ix - a, 0),
        ]
        out[:, :, zy0:zy1, zx0:zx1] = y
    mask = torch.zeros_like(x)
    mx0, my0 = max(ix + a, 0), max(iy + a, 0)
    mx1, my1 = min(ix - b, 0) + width, min(iy - b, 0) + height
    if mx0 < mx1 and my0 < my1:
        mask[:, :, my0:my1, mx0:mx1] = 1
    return out, mask


def affine_bandlimit_filter(
    mat: torch.Tensor,
    a: int = LANCZOS_A,
    amax: int = 16,
    aflt: int = AFFINE_DESIGN_TAPS,
    up: int = AFFINE_UPSAMPLING,
    cutoff_in: float = 1.0,
    cutoff_out: float = 1.0,
) -> torch.Tensor:
    """2-D FIR filter for resampling an image under the linear map ``mat[:2, :2]`` without aliasing.

    The ideal filter is the convolution of an axis-aligned 2-D sinc (band limit of the input grid) with the
    same sinc in the transformed coordinates (band limit of the output grid); it is windowed by the
    convolution of the two correspondingly oriented 2-D Lanczos-``a`` windows. The convolutions are computed
    with FFTs on a ``(2 aflt up - 1)^2`` grid and the result is cropped to ``2 amax`` input pixels.

    Returns:
        float32 ``[2 amax up - 1, 2 amax up - 1]``; each of the ``up x up`` polyphase components sums to
        ``1 / up^2``.
    """
    if not a <= amax < aflt:
        raise ValueError(f"need a <= amax < aflt, got a={a}, amax={amax}, aflt={aflt}")
    mat = torch.as_tensor(mat, dtype=torch.float32)
    n = aflt * up * 2 - 1
    # Tap positions in input pixels, rotated so that position 0 sits at index 0 (FFT convention).
    taps = ((torch.arange(n, device=mat.device) + 1) / up - aflt).roll(1 - aflt * up)
    yi, xi = torch.meshgrid(taps, taps, indexing="ij")
    xo, yo = (torch.stack([xi, yi], dim=2) @ mat[:2, :2].t()).unbind(2)
    f_in = sinc(xi * cutoff_in) * sinc(yi * cutoff_in)
    f_out = sinc(xo * cutoff_out) * sinc(yo * cutoff_out)
    f = torch.fft.ifftn(torch.fft.fftn(f_in) * torch.fft.fftn(f_out)).real
    w_in = lanczos_window(xi, a) * lanczos_window(yi, a)
    w_out = lanczos_window(xo, a) * lanczos_window(yo, a)
    w = torch.fft.ifftn(torch.fft.fftn(w_in) * torch.fft.fftn(w_out)).real
    f = f * w
    crop = (aflt - amax) * up
    f = f.roll([aflt * up - 1] * 2, dims=[0, 1])[crop:-crop, crop:-crop]
    f = F.pad(f, [0, 1, 0, 1]).reshape(amax * 2, up, amax * 2, up)
    f = f / f.sum([0, 2], keepdim=True) / (up**2)
    return f.reshape(amax * 2 * up, amax * 2 * up)[:-1, :-1]


def apply_affine_transformation(
    x: torch.Tensor, mat: torch.Tensor, up: int = AFFINE_UPSAMPLING, **filter_kwargs
):
    """Resample images under the affine map ``mat`` (3x3, coordinates in half-image units of ``affine_grid``).

    The image is upsampled ``up`` times with :func:`affine_bandlimit_filter`, then sampled bilinearly on the
    transformed grid.

    Returns:
        ``(transformed, mask)``, ``[N, C, H, W]`` each; the mask is 1 where the sample came from the
        valid interior.
    """
    _, _, height, width = x.shape
    mat = torch.as_tensor(mat, dtype=torch.float32, device=x.device)
    f = affine_bandlimit_filter(mat, up=up, **filter_kwargs)
    pad = f.shape[0] // 2
    theta = mat.inverse()
    theta[:2, 2] *= 2
    theta[0, 2] += 1 / up / width
    theta[1, 2] += 1 / up / height
    theta[0, :] *= width / (width + pad / up * 2)
    theta[1, :] *= height / (height + pad / up * 2)
    theta = theta[:2, :3].unsqueeze(0).repeat([x.shape[0], 1, 1])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = upsample2d(x, f.to(x.dtype), up=up, padding=pad)
    out = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = torch.zeros_like(y)
    border = pad * 2 + 1
    mask[:, :, border:-border, border:-border] = 1
    mask = F.grid_sample(mask, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out, mask


def apply_fractional_rotation(
    x: torch.Tensor, angle: torch.Tensor | float, a: int = LANCZOS_A, **filter_kwargs
):
    """Rotate images by ``angle`` radians with the band-limited resampler. Returns ``(rotated, mask)``."""
    mat = rotation_matrix(torch.as_tensor(angle, dtype=torch.float32, device=x.device))
    return apply_affine_transformation(x, mat, a=a, amax=a * 2, **filter_kwargs)


def apply_fractional_pseudo_rotation(
    x: torch.Tensor, angle: torch.Tensor | float, a: int = LANCZOS_A, **filter_kwargs
):
    """Filter images with the band limit that a rotation by ``angle`` imposes, without rotating them.

    Returns ``(filtered, mask)``; the mask excludes the filter's border.
    """
    mat = rotation_matrix(-torch.as_tensor(angle, dtype=torch.float32, device=x.device))
    f = affine_bandlimit_filter(mat, a=a, amax=a * 2, up=1, **filter_kwargs)
    y = filter2d(x, f.to(x.dtype))
    mask = torch.zeros_like(y)
    c = f.shape[0] // 2
    mask[:, :, c:-c, c:-c] = 1
    return y, mask


def psnr_db(squared_error_sum: float, mask_sum: float, peak_to_peak: float = PEAK_TO_PEAK) -> float:
    """``10 log10(peak^2 / MSE)``, ``MSE = squared_error_sum / mask_sum`` (``inf`` for a perfect match)."""
    if mask_sum <= 0:
        raise ValueError("no valid pixels to compare; the transforms moved every pixel out of the image")
    mse = squared_error_sum / mask_sum
    if mse <= 0:
        return math.inf
    return 20 * math.log10(peak_to_peak) - 10 * math.log10(mse)


# ----------------------------------------------------------------------------------------------------------
# Generators with a transformable input.


def supports_input_transform(G: nn.Module) -> bool:
    """True when ``G.synthesis(ws, transform=M)`` exists (StyleGAN3, StyleGAN-XL, ``with_fourier_input``)."""
    synthesis = getattr(G, "synthesis", None)
    if synthesis is None:
        return False
    try:
        return "transform" in inspect.signature(synthesis.forward).parameters
    except (TypeError, ValueError):
        return False


class _FourierInputSynthesis(nn.Module):
    """A StyleGAN2 synthesis network whose 4x4 constant is replaced by transformable Fourier features."""

    def __init__(self, synthesis: nn.Module, bandwidth: float, sampling_rate: float) -> None:
        super().__init__()
        from styleforge.models.stylegan3 import SynthesisInput

        blocks = synthesis.blocks() if hasattr(synthesis, "blocks") else None
        first = blocks[0] if blocks else None
        if first is None or not hasattr(first, "const") or not hasattr(first, "conv1"):
            raise UserInputError(
                "with_fourier_input needs a StyleGAN2 synthesis network whose first block has a constant "
                "input ('const') followed by 'conv1'."
            )
        const = first.const
        channels, size = int(const.shape[0]), int(const.shape[-1])
        self.synthesis = synthesis
        self.num_ws = synthesis.num_ws
        self.w_dim = synthesis.w_dim
        self.img_resolution = synthesis.img_resolution
        self.img_channels = synthesis.img_channels
        self.input = SynthesisInput(
            synthesis.w_dim, channels, size, sampling_rate=sampling_rate, bandwidth=bandwidth
        )
        self._pending: torch.Tensor | None = None
        first.conv1.register_forward_pre_hook(self._replace_input, with_kwargs=True)

    def _replace_input(self, module, args, kwargs):
        if self._pending is None:
            return None
        return (self._pending.to(args[0].dtype),) + tuple(args[1:]), kwargs

    def forward(self, ws: torch.Tensor, transform: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        self._pending = self.input(ws[:, 0].to(torch.float32), transform=transform)
        try:
            return self.synthesis(ws, **kwargs)
        finally:
            self._pending = None


class _FourierInputGenerator(nn.Module):
    def __init__(self, G: nn.Module, bandwidth: float, sampling_rate: float) -> None:
        super().__init__()
        self.G = G
        self.mapping = G.mapping
        self.synthesis = _FourierInputSynthesis(G.synthesis, bandwidth, sampling_rate)
        for name in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_ws"):
            setattr(self, name, getattr(G, name))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, transform=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, transform=transform, **synthesis_kwargs)


#: Fourier input of :func:`with_fourier_input`: 4 samples per unit (the 4x4 grid spans the image), cutoff
#: at half the Nyquist rate so that rotated frequencies stay below it.
FOURIER_INPUT_SAMPLING_RATE = 4.0
FOURIER_INPUT_BANDWIDTH = 1.0


def with_fourier_input(
    G: nn.Module,
    bandwidth: float = FOURIER_INPUT_BANDWIDTH,
    sampling_rate: float = FOURIER_INPUT_SAMPLING_RATE,
) -> nn.Module:
    """A StyleGAN2 generator with Fourier-feature input (the paper's config B), sharing ``G``'s weights.

    The learned 4x4 constant is replaced by StyleGAN3's :class:`~styleforge.models.stylegan3.SynthesisInput`
    (random frequencies of radius <= ``bandwidth`` sampled at ``sampling_rate`` per image width, with a new
    affine layer and mixing matrix drawn from the global RNG). The result accepts
    ``synthesis(ws, transform=M)`` so the equivariance metrics apply. ``G``'s weights are shared, not copied;
    the only change to ``G`` is a forward pre-hook on its first convolution, which does nothing unless the
    call comes through the returned wrapper (pass a copy of ``G`` if even that matters).
    """
    if supports_input_transform(G):
        raise UserInputError("this generator already has a transformable input; use it directly")
    return _FourierInputGenerator(G, bandwidth, sampling_rate)


# ----------------------------------------------------------------------------------------------------------
# The metric.


def _random_labels(c_dim: int, batch: int, gen: torch.Generator, device) -> torch.Tensor:
    c = torch.zeros([batch, c_dim])
    if c_dim > 0:
        c[torch.arange(batch), torch.randint(c_dim, [batch], generator=gen)] = 1
    return c.to(device)


@torch.no_grad()
def compute_equivariance(
    G: nn.Module,
    config: EquivarianceConfig,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
    on_batch: Callable[[str, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    rank: int = 0,
    num_ranks: int = 1,
    gather: Callable[[Any], list[Any]] | None = None,
) -> dict[str, float]:
    """EQ-T, EQ-T_frac and/or EQ-R of ``G`` in dB.

    Args:
        G: a generator with ``mapping(z, c)`` and ``synthesis(ws, transform=M)`` (StyleGAN3, StyleGAN-XL, or a
            StyleGAN2 wrapped by :func:`with_fourier_input`). It is copied; the original is left untouched.
        config: what to compute and how many samples.
        device: where to run.
        progress: called with the number of samples done after each batch.
        on_batch: called for every batch and metric with ``(name, reference, generated, mask)``, the tensors
            the metric compares (``[N, C, H, W]`` each; ``mask`` is 1 on the valid pixels): the transformed
            output ``t[g(z)]``, the output of the transformed input ``g(t[z])`` (for EQ-R after the
            pseudo-rotation filter), as :mod:`styleforge.analysis.equivariance_images` draws them.
        rank, num_ranks, gather: several processes computing the metric together: every one draws every
            batch's latents and transforms, runs only batches ``rank, rank + num_ranks, ...``, and the error
            sums are added over the processes through ``gather`` (``all_gather_object``).

    Returns:
        ``{"eqt_int": dB, "eqt_frac": dB, "eqr": dB}`` for the selected metrics.
    """
    if not supports_input_transform(G):
        raise UserInputError(
            "Equivariance metrics need a generator whose input can be translated and rotated "
            "(synthesis(ws, transform=M)): StyleGAN3 or StyleGAN-XL. StyleGAN2 starts from a constant; "
            "compare architectures with styleforge.metrics.equivariance.with_fourier_input (the paper's "
            "config B)."
        )
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
    # Separate streams: every network evaluated with the same config sees the same transforms, whatever it
    # draws for its latents and noise buffers.
    gen = torch.Generator().manual_seed(config.seed)
    gen_t = torch.Generator().manual_seed(config.seed + _TRANSFORM_SEED_OFFSET)
    eye = torch.eye(3)
    names = [
        n for n, on in (("eqt_int", config.eqt_int), ("eqt_frac", config.eqt_frac), ("eqr", config.eqr)) if on
    ]
    sums = {n: torch.zeros(2, dtype=torch.float64) for n in names}
    res = G.img_resolution
    # A translation by t units moves the content by t * img_resolution pixels along both axes (a non-square
    # canvas samples both at the same rate); the image shifts below take fractions of the width and height.
    width, height = image_size(G)
    to_w, to_h = res / width, res / height
    if config.eqr and width != height:
        raise UserInputError(
            f"EQ-R is defined on square images; this generator makes {width}x{height} ones. Measure EQ-T "
            "(eqt50k_int, eqt50k_frac) on it, or EQ-R on a square network."
        )

    def _compare(name: str, ref: torch.Tensor, img: torch.Tensor, mask: torch.Tensor) -> None:
        sums[name] += _masked_sums(ref, img, mask)
        if on_batch is not None:
            on_batch(name, ref, img, mask)

    def draw_shift() -> torch.Tensor:
        return (torch.rand(2, generator=gen_t) * 2 - 1) * config.translate_max

    done = index = 0
    while done < config.num_samples:
        batch = min(config.batch_size, config.num_samples - done)
        # Fresh constant noise per batch (StyleGAN2 noise buffers are fixed in pixel space).
        for name, buf in G.named_buffers():
            if name.endswith("noise_const"):
                buf.copy_(torch.randn(buf.shape, generator=gen).to(buf.device))
        z = torch.randn([batch, G.z_dim], generator=gen).to(device)
        c = _random_labels(G.c_dim, batch, gen, device)
        t_int = draw_shift() if config.eqt_int else None
        t_frac = draw_shift() if config.eqt_frac else None
        angle = (torch.rand([], generator=gen_t) * 2 - 1) * (config.rotate_max * math.pi) if config.eqr else None
        if index % num_ranks == rank:
            ws = G.mapping(z, c, truncation_psi=config.truncation_psi)

            def synth(m: torch.Tensor, ws: torch.Tensor = ws) -> torch.Tensor:
                return G.synthesis(ws, transform=m.to(device), noise_mode="const")

            orig = synth(eye)
            if t_int is not None:
                t = (t_int * res).round() / res
                m = eye.clone()
                m[:2, 2] = -t
                ref, mask = apply_integer_translation(orig, t[0] * to_w, t[1] * to_h)
                _compare("eqt_int", ref, synth(m), mask)
            if t_frac is not None:
                m = eye.clone()
                m[:2, 2] = -t_frac
                ref, mask = apply_fractional_translation(orig, t_frac[0] * to_w, t_frac[1] * to_h)
                _compare("eqt_frac", ref, synth(m), mask)
            if angle is not None:
                img = synth(rotation_matrix(-angle))
                ref, ref_mask = apply_fractional_rotation(orig, angle.to(device))
                pseudo, pseudo_mask = apply_fractional_pseudo_rotation(img, angle.to(device))
                _compare("eqr", ref, pseudo, ref_mask * pseudo_mask)
        done += batch
        index += 1
        if progress is not None:
            progress(done)
    if num_ranks > 1:
        if gather is None:
            raise ValueError("compute_equivariance: num_ranks > 1 needs a gather function")
        parts = gather(sums)
        sums = {n: sum((part[n] for part in parts), torch.zeros(2, dtype=torch.float64)) for n in names}
    return {n: psnr_db(float(s[0]), float(s[1])) for n, s in sums.items()}


def _masked_sums(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[sum(mask (a - b)^2), sum(mask)]`` in float64 (over every sample, channel and pixel)."""
    diff = (a.to(torch.float64) - b.to(torch.float64)).square() * mask.to(torch.float64)
    return torch.stack([diff.sum(), mask.to(torch.float64).sum()]).cpu()


def _metric_from_context(ctx: MetricContext, key: str, **flags: bool) -> dict[str, float]:
    if ctx.G is None:
        raise UserInputError("equivariance metrics need a generator (ctx.G)")
    num = ctx.num_gen if ctx.num_gen is not None else DEFAULT_NUM_SAMPLES
    config = EquivarianceConfig(
        num_samples=num, batch_size=ctx.batch_size, seed=ctx.seed, truncation_psi=ctx.truncation_psi, **flags
    )
    bar = None
    if ctx.progress:
        from tqdm import tqdm

        bar = tqdm(total=num, desc=key, unit="img")

    def update(done: int) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()

    try:
        out = compute_equivariance(ctx.G, config, device=ctx.device, progress=update, rank=ctx.rank,
                                   num_ranks=ctx.num_ranks, gather=ctx.gather)
    finally:
        if bar is not None:
            bar.close()
    (value,) = out.values()
    return {key: float(value)}


@register_metric("eqt50k_int")
def eqt50k_int(ctx: MetricContext) -> dict[str, float]:
    """EQ-T (integer translation) in dB over 50k samples (``ctx.num_gen`` overrides the count)."""
    return _metric_from_context(ctx, "eqt50k_int", eqt_int=True)


@register_metric("eqt50k_frac")
def eqt50k_frac(ctx: MetricContext) -> dict[str, float]:
    """EQ-T_frac (sub-pixel translation) in dB over 50k samples (``ctx.num_gen`` overrides the count)."""
    return _metric_from_context(ctx, "eqt50k_frac", eqt_frac=True)


@register_metric("eqr50k")
def eqr50k(ctx: MetricContext) -> dict[str, float]:
    """EQ-R (rotation) in dB over 50k samples (``ctx.num_gen`` overrides the count)."""
    return _metric_from_context(ctx, "eqr50k", eqr=True)

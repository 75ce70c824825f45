"""FIR filter setup and design: StyleGAN2's resampling filters and StyleGAN3's Kaiser low-pass filters.

Conventions (shared with :mod:`styleforge.ops.upfirdn2d`):

- a filter is a float32 tensor, either 1-D ``[taps]`` (separable: applied along x, then along y) or 2-D
  ``[taps_y, taps_x]`` (non-separable);
- filters are applied by the resampling ops as a convolution (the taps are reversed before the
  cross-correlation) unless ``flip_filter=True``; for the symmetric filters used here both give the same
  result.

StyleGAN3 (Karras et al. 2021, "Alias-Free Generative Adversarial Networks", sec. 3 and app. C) designs its
low-pass filters with the Kaiser window method. In the paper's symbols the filter of a layer has cutoff
``f_c``, half-width of the transition band ``f_h`` (so ``width = 2 f_h``) and is evaluated at sampling rate
``s``. The 1-D design here equals ``scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)``; the radial
design (StyleGAN3-R) is a jinc low-pass windowed by the outer product of two 1-D Kaiser windows, as the
official networks compute it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.special
import torch

__all__ = [
    "setup_filter",
    "kaiser_atten",
    "kaiser_beta",
    "kaiser_window",
    "kaiser_lowpass",
    "design_lowpass_filter",
    "lowpass_numtaps",
]

#: 1-D filters with at least this many taps are kept separable by ``setup_filter(separable=None)``
SEPARABLE_MIN_TAPS = 8

# Kaiser's empirical formulas (Oppenheim & Schafer, "Discrete-Time Signal Processing", eq. 7.62-7.63):
# attenuation A [dB] reached by N taps with transition width dw (in units of pi rad/sample):
#     A = 2.285 (N - 1) pi dw + 7.95
# and the window shape parameter beta that reaches A.
_KAISER_ATTEN_SLOPE = 2.285
_KAISER_ATTEN_OFFSET = 7.95
_KAISER_BETA_HIGH_DB = 50.0  # above: beta = 0.1102 (A - 8.7)
# between: beta = 0.5842 (A - 21)^0.4 + 0.07886 (A - 21); below: beta = 0 (rectangular window)
_KAISER_BETA_LOW_DB = 21.0


def setup_filter(
    f: Sequence[float] | np.ndarray | torch.Tensor | float | None,
    *,
    normalize: bool = True,
    flip: bool = False,
    gain: float = 1.0,
    separable: bool | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Turn filter taps into the float32 tensor that the resampling ops expect.

    Args:
        f: taps. ``None`` means the identity ``[1]``; a scalar is one tap; 1-D taps ``[k]`` give a separable
            filter (or their outer product ``f f^T`` when not separable); 2-D taps ``[kh, kw]`` are used as
            they are.
        normalize: scale so that the taps sum to 1 (unit DC gain) before ``gain`` is applied.
        flip: reverse the taps along every axis. gain: overall DC gain of the 2-D filter. A separable filter
            gets ``gain ** 0.5`` on each of its two passes,
            a 2-D filter gets ``gain``; in general each tensor is scaled by ``gain ** (ndim / 2)``. separable:
            keep 1-D taps separable. ``None`` decides automatically: separable when 1-D with at least
            ``SEPARABLE_MIN_TAPS`` taps (as the official networks do), so short filters such as ``[1, 3, 3,
            1]``
            become a 2-D ``[4, 4]`` outer product.
        device: where to put the result.

    Returns:
        float32 tensor ``[k]`` (separable) or ``[kh, kw]``.
    """
    if f is None:
        f = 1.0
    t = torch.as_tensor(f, dtype=torch.float32).detach().clone()
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim not in (1, 2) or t.numel() == 0:
        raise ValueError(f"filter taps must be a non-empty 1-D or 2-D array, got shape {list(t.shape)}")
    if separable is None:
        separable = t.ndim == 1 and t.numel() >= SEPARABLE_MIN_TAPS
    if t.ndim == 1 and not separable:
        t = torch.outer(t, t)
    if separable and t.ndim != 1:
        raise ValueError("separable=True needs 1-D taps")
    if normalize:
        t = t / t.sum()
    if flip:
        t = t.flip(list(range(t.ndim)))
    t = t * (gain ** (t.ndim / 2))
    return t.to(device=device) if device is not None else t


def kaiser_atten(numtaps: int, width: float) -> float:
    """Stop-band attenuation A in dB reached by a Kaiser-window FIR filter.

    Args:
        numtaps: filter length N.
        width: transition width as a fraction of the Nyquist frequency (``2 f_h / s`` in StyleGAN3's symbols).
    """
    return _KAISER_ATTEN_SLOPE * (numtaps - 1) * math.pi * width + _KAISER_ATTEN_OFFSET


def kaiser_beta(atten: float) -> float:
    """Kaiser window shape parameter beta that reaches a stop-band attenuation of ``atten`` dB."""
    if atten > _KAISER_BETA_HIGH_DB:
        return 0.1102 * (atten - 8.7)
    if atten > _KAISER_BETA_LOW_DB:
        excess = atten - _KAISER_BETA_LOW_DB
        return 0.5842 * excess**0.4 + 0.07886 * excess
    return 0.0


def kaiser_window(numtaps: int, beta: float) -> np.ndarray:
    """Symmetric Kaiser window, float64 ``[N]``.

    ``w[n] = I0(beta sqrt(1 - (2n / (N - 1) - 1)^2)) / I0(beta)``, the window of ``scipy.signal.firwin``.
    """
    if numtaps == 1:
        return np.ones(1)
    n = np.arange(numtaps, dtype=np.float64)
    ratio = 2.0 * n / (numtaps - 1) - 1.0
    return np.i0(beta * np.sqrt(np.clip(1.0 - ratio**2, 0.0, None))) / np.i0(beta)


def _check_design(numtaps: int, cutoff: float, width: float, fs: float) -> None:
    if int(numtaps) != numtaps or numtaps < 1:
        raise ValueError(f"numtaps must be a positive integer, got {numtaps}")
    if not 0 < cutoff < fs / 2:
        raise ValueError(f"cutoff must lie strictly between 0 and the Nyquist frequency fs/2 = {fs / 2}, "
                         f"got {cutoff}")
    if width <= 0:
        raise ValueError(f"transition width must be positive, got {width}")


def kaiser_lowpass(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor:
    """Kaiser-window low-pass FIR filter with unit DC gain.

    Args:
        numtaps: number of taps N per axis.
        cutoff: cutoff frequency ``f_c`` (same units as ``fs``; -6 dB point of the 1-D design).
        width: transition band width ``2 f_h`` (same units as ``fs``); sets the window's beta via Kaiser's
            formula.
        fs: sampling rate ``s``.
        radial: ``False``: the 1-D windowed-sinc filter, equal to ``scipy.signal.firwin(numtaps, cutoff,
            width=width, fs=fs)``. ``True``: the radially symmetric 2-D filter of StyleGAN3-R, ``h(r) = J1(2
            pi f_c r) / (pi r)`` sampled at ``r = |(x, y)|`` with pixel spacing ``1 / fs``, multiplied by
            ``w(x) w(y)`` (outer product of the 1-D Kaiser window) and normalised to sum 1.

    Returns:
        float32 tensor ``[N]`` or ``[N, N]`` whose taps sum to 1.
    """
    _check_design(numtaps, cutoff, width, fs)
    nyquist = fs / 2
    beta = kaiser_beta(kaiser_atten(numtaps, width / nyquist))
    window = kaiser_window(numtaps, beta)
    if not radial:
        # Ideal low-pass impulse response 2 (f_c / fs) sinc(2 (f_c / fs) m), sampled around the centre tap.
        m = np.arange(numtaps, dtype=np.float64) - (numtaps - 1) / 2
        rel_cutoff = cutoff / nyquist
        h = rel_cutoff * np.sinc(rel_cutoff * m) * window
        return torch.as_tensor(h / h.sum(), dtype=torch.float32)
    coords = (np.arange(numtaps, dtype=np.float64) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(coords, coords))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = scipy.special.j1(2 * math.pi * cutoff * r) / (math.pi * r)
    h[r == 0] = cutoff  # limit of J1(2 pi f_c r) / (pi r) at r = 0
    h = h * np.outer(window, window)
    return torch.as_tensor(h / h.sum(), dtype=torch.float32)


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """StyleGAN3 layer filter: ``None`` (identity) when ``numtaps == 1``, else :func:`kaiser_lowpass`."""
    if numtaps == 1:
        return None
    return kaiser_lowpass(numtaps, cutoff, width, fs, radial=radial)


def lowpass_numtaps(filter_size: int, factor: int, enabled: bool = True) -> int:
    """Taps of a StyleGAN3 up- or down-sampling filter: ``filter_size * factor``, or 1 when nothing is
    resampled.

    Args:
        filter_size: taps per input pixel (``n`` in the paper, 6 in the official configs).
        factor: the integer resampling factor (``round(tmp_sampling_rate / sampling_rate)``).
        enabled: ``False`` disables filtering (the official ToRGB layer), giving 1 tap.
    """
    return filter_size * factor if factor > 1 and enabled else 1

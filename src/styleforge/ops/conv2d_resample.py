"""2-D convolution with optional FIR up/downsampling: the resampling convolution of StyleGAN2.

Mathematically ``conv2d_resample(x, w, f, up, down, padding)`` is

    downsample2d(conv(upsample2d(x, f, up), w), f, down)   (with the padding folded into the resampling steps)

StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN", app. B) evaluates it
in the cheapest equivalent order, and the official networks' numbers depend on that order, so this op follows
it:

- 1x1 kernel and downsampling only: filter+decimate first, then the 1x1 conv;
- 1x1 kernel and upsampling only: the 1x1 conv first, then upsample;
- downsampling only: filter, then a convolution with stride ``down``;
- upsampling: a transposed convolution with stride ``up`` (zero insertion and the conv in one step), then the
  filter with gain ``up**2`` (and an extra filter + decimate when ``down > 1`` as well);
- neither: one plain convolution when the padding is symmetric and non-negative, else pad/crop then conv.

``flip_weight=True`` evaluates the conv as PyTorch's cross-correlation; ``False`` as a true convolution (the
kernel reversed). Inputs and weights keep their dtype (the caller casts ``w`` to ``x.dtype``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from styleforge.ops._common import check_impl, filter_size, parse_padding
from styleforge.ops.upfirdn2d import upfirdn2d
from styleforge.ops.winograd import fast_conv2d

__all__ = ["conv2d_resample"]


def _conv(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: int = 1,
    padding: tuple[int, int] = (0, 0),
    groups: int = 1,
    transpose: bool = False,
    flip_weight: bool = True,
    fast: bool = False,
) -> torch.Tensor:
    """conv2d / conv_transpose2d; ``flip_weight=False`` reverses the kernel first (true convolution).

    ``fast=True`` lets a stride-1 3x3 convolution on the CPU run as Winograd ``F(4x4, 3x3)`` where that is faster.
    """
    kh, kw = w.shape[2], w.shape[3]
    if not flip_weight and (kh > 1 or kw > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    conv = fast_conv2d if fast else F.conv2d
    return conv(x, w, stride=stride, padding=padding, groups=groups)


def _transpose_grouped_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """``[O, I/g, kh, kw]`` conv weight -> ``[I, O/g, kh, kw]`` weight of the equivalent transposed conv."""
    out_ch, in_per_group, kh, kw = w.shape
    if groups == 1:
        return w.transpose(0, 1)
    w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
    return w.reshape(groups * in_per_group, out_ch // groups, kh, kw)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """Convolve ``x`` with ``w``, upsampling before and/or downsampling after with the FIR filter ``f``.

    Args:
        x: input ``[N, C_in, H, W]``.
        w: weight ``[C_out, C_in / groups, kh, kw]`` (same dtype as ``x``).
        f: resampling filter from :func:`styleforge.ops.filters.setup_filter` (``None`` = box of one tap).
        up: integer upsampling factor.
        down: integer downsampling factor.
        padding: ``p``, ``(px, py)`` or ``(x0, x1, y0, y1)`` of the conv, in upsampled pixels.
        groups: convolution groups.
        flip_weight: ``True`` = cross-correlation (PyTorch convention), ``False`` = convolution.
        flip_filter: ``True`` = correlate with ``f`` instead of convolving.
        impl: implementation of the inner :func:`upfirdn2d` calls (``"ref"``, ``"fast"``, ``"auto"``).

    Returns:
        ``[N, C_out, H', W']``; with ``padding = k // 2`` this is ``H * up // down``.
    """
    fast = check_impl(impl) == "fast"
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"x and w must be 4-D, got {list(x.shape)} and {list(w.shape)}")
    if not isinstance(up, int) or not isinstance(down, int) or up < 1 or down < 1:
        raise ValueError(f"up and down must be integers >= 1, got up={up}, down={down}")
    out_ch, in_per_group, kh, kw = w.shape
    if x.shape[1] != in_per_group * groups:
        raise ValueError(f"x has {x.shape[1]} channels but w expects {in_per_group} x {groups} groups")
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)

    # Fold the centring of the resampling filter into the padding.
    if up > 1:
        x0, x1 = x0 + (fw + up - 1) // 2, x1 + (fw - up) // 2
        y0, y1 = y0 + (fh + up - 1) // 2, y1 + (fh - up) // 2
    if down > 1:
        x0, x1 = x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2
        y0, y1 = y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2
    pad = [x0, x1, y0, y1]
    pointwise = kh == 1 and kw == 1

    if pointwise and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, impl=impl)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    if pointwise and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=pad, gain=up**2, flip_filter=flip_filter, impl=impl)

    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, impl=impl)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    if up > 1:
        # The transposed conv inserts the zeros and convolves; its over- or under-padding is fixed after.
        wt = _transpose_grouped_weight(w, groups)
        x0, x1 = x0 - (kw - 1), x1 - (kw - up)
        y0, y1 = y0 - (kh - 1), y1 - (kh - up)
        crop_x = max(min(-x0, -x1), 0)
        crop_y = max(min(-y0, -y1), 0)
        x = _conv(x, wt, stride=up, padding=(crop_y, crop_x), groups=groups, transpose=True,
                  flip_weight=not flip_weight)
        pad = [x0 + crop_x, x1 + crop_x, y0 + crop_y, y1 + crop_y]
        x = upfirdn2d(x, f, padding=pad, gain=up**2, flip_filter=flip_filter, impl=impl)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
        return x

    if x0 == x1 and y0 == y1 and x0 >= 0 and y0 >= 0:
        return _conv(x, w, padding=(y0, x0), groups=groups, flip_weight=flip_weight, fast=fast)

    # General case (asymmetric or negative padding without resampling).
    x = upfirdn2d(x, None, padding=pad, flip_filter=flip_filter, impl=impl)
    return _conv(x, w, groups=groups, flip_weight=flip_weight, fast=fast)

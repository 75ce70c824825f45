"""Upsample, FIR-filter, downsample: the resampling primitive of StyleGAN2/3.

``upfirdn2d`` performs, for every channel of an NCHW tensor independently:

1. upsampling by inserting ``up - 1`` zeros after every pixel (along x and y separately),
2. padding by ``(x0, x1, y0, y1)`` pixels (negative values crop),
3. filtering with the FIR filter ``f`` as a convolution (taps reversed before the sliding dot product; with
   ``flip_filter=True`` they are not reversed), the filter scaled by ``gain ** (f.ndim / 2)``,
4. downsampling by keeping every ``down``-th pixel.

Output size along each axis: ``(in * up + pad0 + pad1 - taps) // down + 1``.

``impl="ref"`` follows these four steps literally and is the specification. ``impl="fast"`` computes the same
result without materialising the zero-stuffed signal: upsampling is a transposed convolution with stride
``up`` (polyphase filtering), downsampling is a strided convolution that only evaluates the kept pixels, and
1-D filters run as two 1-D passes. On CPU, long filters (>= ``CHANNELS_LAST_MIN_TAPS`` taps) on many channels run
in channels-last layout, one block of ``CPU_BLOCK_CHANNELS`` channels at a time so that the block stays in cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from styleforge.ops._common import check_impl, filter_size, parse_padding, parse_scaling

__all__ = ["upfirdn2d", "filter2d", "upsample2d", "downsample2d", "upfirdn2d_output_size"]

#: the fast CPU path switches to channels-last layout from this many channels and filter taps on
CHANNELS_LAST_MIN_CHANNELS = 16
CHANNELS_LAST_MIN_TAPS = 8
#: channels per block of the channels-last CPU path (small enough for a block to stay in cache)
CPU_BLOCK_CHANNELS = 16

Padding = int | Sequence[int]
Scaling = int | Sequence[int]


def upfirdn2d_output_size(size: int, up: int, down: int, pad0: int, pad1: int, taps: int) -> int:
    """Length of one output axis: ``(size * up + pad0 + pad1 - taps) // down + 1``."""
    return (size * up + pad0 + pad1 - taps) // down + 1


def _check_inputs(x: torch.Tensor, f: torch.Tensor | None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be an NCHW tensor, got shape {list(getattr(x, 'shape', []))}")
    if f is not None and (not isinstance(f, torch.Tensor) or f.ndim not in (1, 2)):
        raise ValueError("f must be None or a 1-D/2-D tensor (see styleforge.ops.filters.setup_filter)")


def _pad_or_crop(x: torch.Tensor, x0: int, x1: int, y0: int, y1: int) -> torch.Tensor:
    """Zero-pad (positive) or crop (negative) the last two axes."""
    if x0 == x1 == y0 == y1 == 0:
        return x
    if min(x0, x1, y0, y1) >= 0:
        return F.pad(x, [x0, x1, y0, y1])
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    return x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]


def _upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """The specification: zero-stuff, pad/crop, convolve, decimate."""
    n, c, h, w = x.shape
    upx, upy = up
    downx, downy = down
    x0, x1, y0, y1 = padding
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)

    # 1. Zero insertion: every pixel is followed by up - 1 zeros.
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)

    # 2. Pad or crop.
    x = _pad_or_crop(x, x0, x1, y0, y1)

    # 3. FIR filter as a convolution: reverse the taps unless flip_filter.
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, -1, -1), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].expand(c, 1, 1, -1), groups=c)  # along x
        x = F.conv2d(x, f[None, None, :, None].expand(c, 1, -1, 1), groups=c)  # along y

    # 4. Decimation.
    return x[:, :, ::downy, ::downx]


def _resample_axis_fast(
    x: torch.Tensor, taps: torch.Tensor, axis: int, up: int, down: int, pad0: int, pad1: int
) -> torch.Tensor:
    """One axis (2 = y, 3 = x) of the fast path; ``taps`` are the correlation weights ``[C, 1, kh, kw]``."""
    c = x.shape[1]
    k = taps.shape[axis]
    size = x.shape[axis]
    out = upfirdn2d_output_size(size, up, 1, pad0, pad1, k)  # before decimation
    if up == 1:
        stride = (1, down) if axis == 3 else (down, 1)
        if pad0 == pad1 and pad0 >= 0:  # symmetric padding: let the convolution do it
            return F.conv2d(x, taps, stride=stride, padding=(0, pad0) if axis == 3 else (pad0, 0), groups=c)
        pads = [pad0, pad1, 0, 0] if axis == 3 else [0, 0, pad0, pad1]
        return F.conv2d(_pad_or_crop(x, *pads), taps, stride=stride, groups=c)
    # Transposed convolution = zero insertion followed by the correlation with the reversed taps; its output
    # y[j] corresponds to the padded, zero-stuffed signal's filtered sample at j - (k - 1 - pad0).
    w = taps.flip(axis)
    stride = (1, up) if axis == 3 else (up, 1)
    start = k - 1 - pad0  # first wanted sample of the full transposed-conv output
    stop_pad = start + out - ((size - 1) * up + k)  # > 0: zeros to append, < 0: samples to drop at the end
    crop = max(0, min(start, -stop_pad))  # symmetric part of the cropping, done by the conv itself
    y = F.conv_transpose2d(x, w, stride=stride, padding=(0, crop) if axis == 3 else (crop, 0), groups=c)
    start, stop_pad = start - crop, stop_pad + crop
    pads = [-start, stop_pad, 0, 0] if axis == 3 else [0, 0, -start, stop_pad]
    y = _pad_or_crop(y, *pads)
    if down > 1:
        y = y[:, :, :, ::down] if axis == 3 else y[:, :, ::down, :]
    return y


def use_channels_last(x: torch.Tensor, *filters: torch.Tensor | None) -> bool:
    """Whether the fast CPU path should run on a channels-last copy of ``x`` for these filters.

    PyTorch's CPU depthwise (transposed) convolutions with long filters run several times faster in
    channels-last layout, which vectorises over channels; with many channels and long filters (StyleGAN3's
    Kaiser filters) that outweighs the two layout changes. Short filters (StyleGAN2's 4x4) are faster in NCHW.
    """
    taps = max((max(filter_size(f)) for f in filters), default=1)
    return (
        x.device.type == "cpu"
        and x.shape[1] >= CHANNELS_LAST_MIN_CHANNELS
        and taps >= CHANNELS_LAST_MIN_TAPS
        and not x.is_contiguous(memory_format=torch.channels_last)
    )


def _upfirdn2d_fast(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """Fast path in the layout that suits the device; returns the input's memory format."""
    if not use_channels_last(x, f):
        return upfirdn2d_fast_core(x, f, up, down, padding, flip_filter, gain)
    channels = x.shape[1]
    num_blocks = max(channels // CPU_BLOCK_CHANNELS, 1)
    if num_blocks == 1 or (torch.is_grad_enabled() and x.requires_grad):
        x = x.contiguous(memory_format=torch.channels_last)
        return upfirdn2d_fast_core(x, f, up, down, padding, flip_filter, gain).contiguous()
    # Blocks of channels, so that each block's intermediate results stay in cache.
    bounds = [channels * i // num_blocks for i in range(num_blocks + 1)]
    out = None
    for c0, c1 in zip(bounds[:-1], bounds[1:], strict=True):
        block = x[:, c0:c1].contiguous(memory_format=torch.channels_last)
        y = upfirdn2d_fast_core(block, f, up, down, padding, flip_filter, gain)
        if out is None:
            out = y.new_empty([y.shape[0], channels, y.shape[2], y.shape[3]])
        out[:, c0:c1] = y
    return out


def upfirdn2d_fast_core(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """Polyphase / strided evaluation with the same result as :func:`_upfirdn2d_ref` (parsed arguments).

    Works in whatever memory format ``x`` has (convolutions keep channels-last inputs channels-last).
    """
    c = x.shape[1]
    upx, upy = up
    downx, downy = down
    x0, x1, y0, y1 = padding
    if f is None:
        if up == (1, 1):
            x = _pad_or_crop(x, x0, x1, y0, y1)
            x = x[:, :, ::downy, ::downx]
            if gain == 1:
                return x
            # The reference multiplies a float32 identity tap by gain; round the same way.
            return x * torch.tensor(gain, dtype=torch.float32).to(x.dtype)
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 1:
        fx = f[None, None, None, :].expand(c, 1, 1, -1).contiguous()
        fy = f[None, None, :, None].expand(c, 1, -1, 1).contiguous()
        x = _resample_axis_fast(x, fx, 3, upx, downx, x0, x1)
        return _resample_axis_fast(x, fy, 2, upy, downy, y0, y1)
    w = f[None, None].expand(c, 1, -1, -1).contiguous()
    kh, kw = f.shape
    if up == (1, 1):
        if x0 == x1 and y0 == y1 and x0 >= 0 and y0 >= 0:
            return F.conv2d(x, w, stride=(downy, downx), padding=(y0, x0), groups=c)
        x = _pad_or_crop(x, x0, x1, y0, y1)
        return F.conv2d(x, w, stride=(downy, downx), groups=c)
    out_h = upfirdn2d_output_size(x.shape[2], upy, 1, y0, y1, kh)
    out_w = upfirdn2d_output_size(x.shape[3], upx, 1, x0, x1, kw)
    sy, sx = kh - 1 - y0, kw - 1 - x0  # first wanted sample of the full transposed-conv output
    end_y = sy + out_h - ((x.shape[2] - 1) * upy + kh)
    end_x = sx + out_w - ((x.shape[3] - 1) * upx + kw)
    crop_y, crop_x = max(0, min(sy, -end_y)), max(0, min(sx, -end_x))
    y = F.conv_transpose2d(x, w.flip([2, 3]), stride=(upy, upx), padding=(crop_y, crop_x), groups=c)
    sy, end_y, sx, end_x = sy - crop_y, end_y + crop_y, sx - crop_x, end_x + crop_x
    y = _pad_or_crop(y, -sx, end_x, -sy, end_y)
    return y[:, :, ::downy, ::downx] if (downx, downy) != (1, 1) else y


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 1,
    down: Scaling = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample a batch of 2-D images.

    Args:
        x: input ``[N, C, H, W]``.
        f: filter from :func:`styleforge.ops.filters.setup_filter`: ``[kh, kw]`` (2-D), ``[k]`` (separable,
            applied along x then y) or ``None`` (identity).
        up: integer upsampling factor, ``s`` or ``(sx, sy)``.
        down: integer downsampling factor, ``s`` or ``(sx, sy)``.
        padding: ``p``, ``(px, py)`` or ``(x0, x1, y0, y1)`` applied to the upsampled image; negative crops.
        flip_filter: ``False`` = convolution (taps reversed), ``True`` = correlation.
        gain: overall DC gain; the filter tensor is scaled by ``gain ** (f.ndim / 2)``.
        impl: ``"ref"`` (specification), ``"fast"``, or ``"auto"`` (= fast).

    Returns:
        ``[N, C, (H * sy + y0 + y1 - kh) // dy + 1, (W * sx + x0 + x1 - kw) // dx + 1]``, same dtype as ``x``.
    """
    _check_inputs(x, f)
    up_xy = parse_scaling(up)
    down_xy = parse_scaling(down)
    pad = parse_padding(padding)
    fw, fh = filter_size(f)
    up_w = x.shape[3] * up_xy[0] + pad[0] + pad[1]
    up_h = x.shape[2] * up_xy[1] + pad[2] + pad[3]
    if up_w < fw or up_h < fh:
        raise ValueError(
            f"upfirdn2d: the padded, upsampled image ({up_h}x{up_w}) is smaller than the filter ({fh}x{fw}); "
            "use a larger input or more padding"
        )
    if check_impl(impl) == "ref":
        return _upfirdn2d_ref(x, f, up_xy, down_xy, pad, flip_filter, gain)
    return _upfirdn2d_fast(x, f, up_xy, down_xy, pad, flip_filter, gain)


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Filter without resampling; the output has the input's size plus ``padding`` (the filter is centred).

    Shape: ``[N, C, H, W]`` -> ``[N, C, H + y0 + y1, W + x0 + x1]``.
    """
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample by ``up`` with interpolation filter ``f`` (DC gain of the interpolation = ``gain``).

    Shape: ``[N, C, H, W]`` -> ``[N, C, H * sy + y0 + y1, W * sx + x0 + x1]``. The filter is scaled by ``sx *
    sy`` so that a constant image stays constant.
    """
    upx, upy = parse_scaling(up)
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [
        x0 + (fw + upx - 1) // 2,
        x1 + (fw - upx) // 2,
        y0 + (fh + upy - 1) // 2,
        y1 + (fh - upy) // 2,
    ]
    gain = gain * upx * upy
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Low-pass filter with ``f`` and keep every ``down``-th pixel.

    Shape: ``[N, C, H, W]`` -> ``[N, C, (H + y0 + y1) // dy, (W + x0 + x1) // dx]``.
    """
    downx, downy = parse_scaling(down)
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [
        x0 + (fw - downx + 1) // 2,
        x1 + (fw - downx) // 2,
        y0 + (fh - downy + 1) // 2,
        y1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)

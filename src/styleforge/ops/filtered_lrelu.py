"""Filtered leaky ReLU: the alias-suppressing nonlinearity of StyleGAN3.

Karras et al. 2021 (StyleGAN3, sec. 3.2): a pointwise nonlinearity creates frequencies above the Nyquist limit
of the current sampling rate ``s``. The layer therefore upsamples by ``up`` with the low-pass filter ``fu``,
applies the leaky ReLU at the higher rate, low-pass filters with ``fd`` and downsamples by ``down``:

    y = down_d( fd * clamp(lrelu(up_u(x + b) * fu, slope) * gain, +-clamp) )

``impl="ref"`` evaluates exactly this with :func:`upfirdn2d` and :func:`bias_act`. ``impl="fast"`` gives the
same values (to float rounding) with polyphase upsampling (transposed convolution), the leaky ReLU and clamp in
place with the gain folded into the downsampling filter, and a downsampling filter evaluated only at the kept
pixels; on CPU it works in channels-last blocks of channels that stay in cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from styleforge.ops._common import check_impl, filter_size, parse_padding
from styleforge.ops.bias_act import LRELU_SLOPE, bias_act
from styleforge.ops.upfirdn2d import CPU_BLOCK_CHANNELS, upfirdn2d, upfirdn2d_fast_core, use_channels_last

__all__ = ["filtered_lrelu", "filtered_lrelu_output_size"]


def filtered_lrelu_output_size(
    size: int, up: int, down: int, pad0: int, pad1: int, up_taps: int, down_taps: int
) -> int:
    """Length of one output axis.

    ``(size * up + pad0 + pad1 - (up_taps - 1) - (down_taps - 1) + down - 1) // down``
    """
    return (size * up + pad0 + pad1 - (up_taps - 1) - (down_taps - 1) + (down - 1)) // down


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = math.sqrt(2),
    slope: float = LRELU_SLOPE,
    clamp: float | None = None,
    flip_filter: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """Bias, upsample, leaky ReLU, clamp, downsample.

    Args:
        x: input ``[N, C, H, W]``.
        fu: upsampling filter (1-D separable ``[k]``, 2-D ``[kh, kw]`` or ``None``), applied with DC gain
            ``up**2``.
        fd: downsampling filter, same forms as ``fu``.
        b: bias ``[C]`` or ``None``.
        up: integer upsampling factor.
        down: integer downsampling factor.
        padding: ``p``, ``(px, py)`` or ``(x0, x1, y0, y1)``, applied to the upsampled image before ``fu``.
        gain: scale after the leaky ReLU (``sqrt(2)`` by default).
        slope: leaky-ReLU slope for negative inputs.
        clamp: clamp after the gain to ``[-clamp, clamp]``; ``None`` = no clamp.
        flip_filter: ``True`` = correlate instead of convolve (see :func:`upfirdn2d`).
        impl: ``"ref"``, ``"fast"`` or ``"auto"``.

    Returns:
        ``[N, C, H_out, W_out]`` with ``W_out = (W * up + x0 + x1 - (fu_w - 1) - (fd_w - 1) + down - 1) //
        down`` (likewise for H).
    """
    if not isinstance(up, int) or not isinstance(down, int) or up < 1 or down < 1:
        raise ValueError(f"up and down must be integers >= 1, got up={up}, down={down}")
    if x.ndim != 4:
        raise ValueError(f"x must be an NCHW tensor, got shape {list(x.shape)}")
    pad = parse_padding(padding)
    if check_impl(impl) == "ref":
        return _filtered_lrelu_ref(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter)
    return _filtered_lrelu_fast(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter)


def _output_shape(x, fu, fd, up, down, pad) -> list[int]:
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    n, c, h, w = x.shape
    out_h = filtered_lrelu_output_size(h, up, down, pad[2], pad[3], fu_h, fd_h)
    out_w = filtered_lrelu_output_size(w, up, down, pad[0], pad[1], fu_w, fd_w)
    return [n, c, out_h, out_w]


def _filtered_lrelu_ref(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter) -> torch.Tensor:
    """The specification, built from the simpler ops."""
    shape = _output_shape(x, fu, fd, up, down, pad)
    if b is not None:
        x = bias_act(x, b, impl="ref")
    x = upfirdn2d(x, fu, up=up, padding=pad, gain=up**2, flip_filter=flip_filter, impl="ref")
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp, impl="ref")
    x = upfirdn2d(x, fd, down=down, flip_filter=flip_filter, impl="ref")
    if list(x.shape) != shape:
        raise RuntimeError(f"filtered_lrelu: internal shape mismatch {list(x.shape)} != {shape}")
    return x


def _filtered_lrelu_fast(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter) -> torch.Tensor:
    """Same values as the reference; see the module docstring.

    On CPU with many channels the work runs in channels-last blocks of about ``CPU_BLOCK_CHANNELS`` channels
    (every step is per channel): the upsampled block then stays in cache through the activation and the
    downsampling filter, which matters more than the arithmetic on a CPU.
    """
    to_channels_last = use_channels_last(x, fu, fd)
    args = (fu, fd, up, pad, down, gain, slope, clamp, flip_filter)
    channels = x.shape[1]
    num_blocks = channels // CPU_BLOCK_CHANNELS if to_channels_last else 1
    if num_blocks <= 1:
        y = _fast_block(x, b, to_channels_last, *args)
        return y.contiguous() if to_channels_last else y
    bounds = [channels * i // num_blocks for i in range(num_blocks + 1)]
    blocks = list(zip(bounds[:-1], bounds[1:], strict=True))
    bias = [b[c0:c1] if b is not None else None for c0, c1 in blocks]
    tracked = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))
    if tracked:
        ys = [_fast_block(x[:, c0:c1], bb, True, *args) for (c0, c1), bb in zip(blocks, bias, strict=True)]
        return torch.cat(ys, dim=1).contiguous()
    out = None
    for (c0, c1), bb in zip(blocks, bias, strict=True):
        y = _fast_block(x[:, c0:c1], bb, True, *args)
        if out is None:
            out = y.new_empty([y.shape[0], channels, y.shape[2], y.shape[3]])
        out[:, c0:c1] = y  # the copy into the NCHW result is the layout change back
    return out


def _fast_block(x, b, to_channels_last, fu, fd, up, pad, down, gain, slope, clamp, flip_filter) -> torch.Tensor:
    """The fast path on one block of channels; the result is channels-last when ``to_channels_last``."""
    # In-place steps are allowed only on tensors this function created and autograd does not track.
    fresh = fu is not None or b is not None
    if to_channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = upfirdn2d_fast_core(x, fu, (up, up), (1, 1), pad, flip_filter, up**2)
    # lrelu is positively homogeneous, so for gain g > 0:
    #   clamp(g lrelu(x), +-c) = g clamp(lrelu(x), +-c / g)
    # and the factor g moves into the (linear) downsampling filter: one pass less over the largest tensor.
    fold_gain = gain > 0 and fd is not None
    if not fold_gain and gain != 1:
        x = x * gain
    limit = None if clamp is None else (clamp / gain if fold_gain else clamp)
    if fresh and not x.requires_grad:
        x = F.leaky_relu_(x, slope)
        if limit is not None:
            x = x.clamp_(-limit, limit)
    else:
        x = F.leaky_relu(x, slope)
        if limit is not None:
            x = x.clamp(-limit, limit)
    return upfirdn2d_fast_core(x, fd, (1, 1), (down, down), (0, 0, 0, 0), flip_filter, gain if fold_gain else 1)

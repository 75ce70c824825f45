"""Modulated (style) convolutions of StyleGAN2 and StyleGAN3.

StyleGAN2 (Karras et al. 2020, sec. 2.2, eq. 1-3) replaces AdaIN by scaling the conv weights with the style
``s`` of each sample and, optionally, normalising each output feature map back to unit expected variance:

    w'_ijk  = s_i * w_ijk                                   (modulation, i = input channel)
    sigma_j = sqrt(sum_{i,k} w'_ijk^2 + eps)                (eps = 1e-8)
    w''_ijk = w'_ijk / sigma_j                              (demodulation, j = output channel)

Two equivalent evaluations exist. The *fused* one builds per-sample weights ``[N, O, I, kh, kw]`` and runs one
grouped convolution (groups = N). The *non-fused* one scales the activations instead: ``x * s`` before a
shared convolution and ``* 1 / sigma`` after it. Both are provided because the official networks use both (the
non-fused path during training, for its cheaper gradients).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from styleforge.ops._common import check_impl
from styleforge.ops.conv2d_resample import conv2d_resample
from styleforge.ops.winograd import fast_conv2d, winograd_applies

__all__ = ["DEMOD_EPS", "modulated_conv2d", "modulated_conv2d_stylegan3"]

#: epsilon inside the demodulation square root (sigma_j)
DEMOD_EPS = 1e-8


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
    impl: str = "auto",
) -> torch.Tensor:
    """StyleGAN2 modulated convolution with optional up/downsampling and additive noise.

    Args:
        x: input ``[N, I, H, W]`` (float32 or float16).
        weight: conv weight ``[O, I, kh, kw]`` (already multiplied by its equalized-lr gain).
        styles: per-sample styles ``s`` ``[N, I]``.
        noise: added after the convolution (and after demodulation), broadcastable to the output, or ``None``.
        up: upsampling factor (see :func:`conv2d_resample`).
        down: downsampling factor.
        padding: conv padding.
        resample_filter: FIR filter for up/down, from :func:`setup_filter`.
        demodulate: normalise each output channel (eq. 3).
        flip_weight: ``True`` = cross-correlation, ``False`` = convolution (the official layers pass ``up ==
            1``).
        fused_modconv: ``True`` = one grouped convolution with per-sample weights; ``False`` = scale the
            activations.
        impl: ``"ref"`` (the official order of operations), ``"fast"`` or ``"auto"``; the fast path computes
            the demodulation coefficients with one small matmul and also selects the fast resampling ops.

    Returns:
        ``[N, O, H', W']`` in ``x.dtype``.

    When ``x`` is float16 and ``demodulate`` is set, the weight and styles are first rescaled by their maxima
    (``w / (sqrt(I kh kw) * max|w_o|)`` per output channel, ``s / max|s_n|`` per sample) to avoid fp16
    overflow; demodulation cancels these scales.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.ndim != 4 or x.shape[1] != in_ch:
        raise ValueError(f"x must be [N, {in_ch}, H, W] for this weight, got {list(x.shape)}")
    if styles.shape != (n, in_ch):
        raise ValueError(f"styles must be [{n}, {in_ch}], got {list(styles.shape)}")

    if x.dtype == torch.float16 and demodulate:
        w_max = weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)  # max_{i,k} |w_oik| per output channel
        weight = weight * (1 / (in_ch * kh * kw) ** 0.5 / w_max)
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    w = None
    dcoefs = None
    if check_impl(impl) == "fast":
        # sum_{i,k} (s_i w_oik)^2 = sum_i s_i^2 sum_k w_oik^2: one small matmul instead of squaring the
        # per-sample weights, and the modulation and demodulation scales applied in one multiplication.
        if demodulate:
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + DEMOD_EPS).rsqrt()  # [N, O]
        if fused_modconv:
            scale = styles.reshape(n, 1, in_ch, 1, 1)
            if demodulate:
                scale = scale * dcoefs.reshape(n, out_ch, 1, 1, 1)
            w = weight.unsqueeze(0) * scale  # [N, O, I, kh, kw]
    else:
        if demodulate or fused_modconv:
            w = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)  # [N, O, I, kh, kw]
        if demodulate:
            dcoefs = (w.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt()  # [N, O]
        if demodulate and fused_modconv:
            w = w * dcoefs.reshape(n, -1, 1, 1, 1)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight, impl=impl)
        if demodulate and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(n, -1, 1, 1))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            return x.add_(noise.to(x.dtype))
        return x

    x = x.reshape(1, n * in_ch, *x.shape[2:])
    w = w.reshape(n * out_ch, in_ch, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=n,
                        flip_weight=flip_weight, impl=impl)
    x = x.reshape(n, out_ch, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise)
    return x


def modulated_conv2d_stylegan3(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    padding: int | Sequence[int] = 0,
    input_gain: torch.Tensor | None = None,
    fused: bool = True,
    impl: str = "auto",
) -> torch.Tensor:
    """StyleGAN3 modulated convolution (no resampling).

    Differences from :func:`modulated_conv2d`: when ``demodulate`` is set, the weight is first normalised to
    unit RMS per output channel and the styles to unit RMS over the *whole batch* (``s / sqrt(mean(s^2))``);
    an optional ``input_gain`` ``[I]`` or ``[N, I]`` multiplies the modulated weights after demodulation
    (StyleGAN3 passes the inverse of the input magnitude EMA there).

    Args:
        x: ``[N, I, H, W]``; weight: ``[O, I, kh, kw]``; styles: ``[N, I]``.
        padding: ``p`` or ``(py, px)`` as in :func:`torch.nn.functional.conv2d`.
        fused: ``True`` (the official evaluation) = one grouped convolution with per-sample weights; ``False`` =
            scale the activations by the styles (and input gain) before one shared convolution and by the
            demodulation coefficients after it: the same function, with a batch-independent kernel (needed by
            graph exporters whose batch size stays symbolic).
        impl: ``"ref"`` = :func:`torch.nn.functional.conv2d`; ``"fast"``/``"auto"`` may run a 3x3 convolution on the
            CPU as Winograd ``F(4x4, 3x3)`` (:mod:`styleforge.ops.winograd`), the same values up to rounding.

    Returns:
        ``[N, O, H + 2 py - kh + 1, W + 2 px - kw + 1]`` in ``x.dtype``.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.ndim != 4 or x.shape[1] != in_ch:
        raise ValueError(f"x must be [N, {in_ch}, H, W] for this weight, got {list(x.shape)}")
    if styles.shape != (n, in_ch):
        raise ValueError(f"styles must be [{n}, {in_ch}], got {list(styles.shape)}")
    fast = check_impl(impl) == "fast"
    conv2d = fast_conv2d if fast else F.conv2d
    if fused and fast and winograd_applies(x, weight, 1, 1):
        # The shared-kernel form is the same function and gives Winograd one kernel transform and products
        # over the whole batch, instead of one small product per sample.
        fused = False
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    if not fused:
        scale = styles if input_gain is None else styles * input_gain.expand(n, in_ch)
        x = conv2d(x * scale.to(x.dtype).reshape(n, in_ch, 1, 1), weight.to(x.dtype), padding=padding)
        if demodulate:  # sum over I, kh, kw of (W s)^2 = (W^2 summed over kh, kw) @ s^2
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + DEMOD_EPS).rsqrt()  # [N, O]
            x = x * dcoefs.to(x.dtype).reshape(n, out_ch, 1, 1)
        return x
    w = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt()  # [N, O]
        w = w * dcoefs.reshape(n, out_ch, 1, 1, 1)
    if input_gain is not None:
        w = w * input_gain.expand(n, in_ch).reshape(n, 1, in_ch, 1, 1)
    x = x.reshape(1, n * in_ch, *x.shape[2:])
    w = w.reshape(n * out_ch, in_ch, kh, kw)
    x = conv2d(x, w.to(x.dtype), padding=padding, groups=n)
    return x.reshape(n, out_ch, *x.shape[2:])

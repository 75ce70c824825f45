"""Equalized-learning-rate layers (Karras et al. 2018, "Progressive Growing of GANs", sec. 4.1).

The parameters are stored with unit-variance initialisation, ``w ~ N(0, 1) / lr_multiplier``, and scaled at
*runtime* by ``c = lr_multiplier / sqrt(fan_in)`` (He's constant). Adam's per-parameter step then acts on
every weight at the same relative speed; ``lr_multiplier`` lowers the effective learning rate of a layer (0.01
in the StyleGAN mapping network). The bias is scaled by ``lr_multiplier`` the same way.

Both layers keep an ``ops_impl`` attribute (``"auto"``, ``"ref"`` or ``"fast"``) that they pass to the ops;
:meth:`styleforge.models.base.Network.set_ops_impl` sets it on a whole network.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from styleforge.ops.bias_act import ACTIVATIONS, bias_act
from styleforge.ops.conv2d_resample import conv2d_resample
from styleforge.ops.filters import setup_filter

__all__ = ["EqualizedLinear", "EqualizedConv2d"]

#: the StyleGAN2 resampling filter (binomial [1, 3, 3, 1], outer product, normalised)
DEFAULT_RESAMPLE_FILTER = (1, 3, 3, 1)


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")


class EqualizedLinear(nn.Module):
    """Fully connected layer with equalized learning rate: ``act(x W^T c + b lr_multiplier)``.

    Args:
        in_features: input width.
        out_features: output width.
        bias: learn a bias.
        activation: a key of :data:`styleforge.ops.bias_act.ACTIVATIONS` (applied with its default gain).
        lr_multiplier: learning-rate multiplier of this layer.
        bias_init: initial value of the effective bias (scalar or ``[out_features]``).
        weight_init: standard deviation of the initial effective weight (0 gives an all-zero weight;
            StyleGAN3's input affine uses it).

    Shapes: ``[N, in_features]`` -> ``[N, out_features]``. Parameters: ``weight [out, in]``, ``bias [out]``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float | Sequence[float] = 0.0,
        weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        _check_activation(activation)
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        self.ops_impl = "auto"
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        if bias:
            init = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
            self.bias = nn.Parameter(torch.from_numpy(init / np.float32(lr_multiplier)).float())
        else:
            self.register_parameter("bias", None)
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, act=self.activation, impl=self.ops_impl)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"activation={self.activation}, lr_multiplier={self.lr_multiplier:g}"
        )


class EqualizedConv2d(nn.Module):
    """Conv layer with equalized learning rate, optional FIR up/downsampling, activation and clamping.

    Computes ``clamp(act(conv2d_resample(x, W c) + b) * g_act * gain, +-conv_clamp * gain)`` with
    ``c = 1 / sqrt(in_channels * k^2)``, ``g_act`` the activation's default gain, ``padding = k // 2``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size k.
        bias: learn a bias.
        activation: key of :data:`styleforge.ops.bias_act.ACTIVATIONS`.
        up: integer upsampling factor (output is ``up`` times larger).
        down: integer downsampling factor.
        resample_filter: taps of the resampling filter (stored as the non-persistent buffer
            ``resample_filter``).
        conv_clamp: clamp the output to ``[-conv_clamp, conv_clamp]`` (``None`` = off); used with fp16.
        channels_last: store the weight in channels-last memory format.
        trainable: ``False`` stores weight and bias as buffers instead of parameters.

    Shapes: ``[N, in_channels, H, W]`` -> ``[N, out_channels, H * up // down, W * up // down]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
        conv_clamp: float | None = None,
        channels_last: bool = False,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        _check_activation(activation)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.ops_impl = "auto"
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation].def_gain
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        weight = weight.to(memory_format=memory_format)
        bias_t = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_t) if bias_t is not None else None
        else:
            self.register_buffer("weight", weight)
            if bias_t is not None:
                self.register_buffer("bias", bias_t)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """``[N, C_in, H, W]`` -> ``[N, C_out, H', W']``; ``gain`` scales the activation gain and clamp."""
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(
            x,
            w.to(x.dtype),
            f=self.resample_filter,
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=(self.up == 1),  # the official layers convolve (flip) only when upsampling
            impl=self.ops_impl,
        )
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp, impl=self.ops_impl)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, activation={self.activation}, up={self.up}, down={self.down}"
        )

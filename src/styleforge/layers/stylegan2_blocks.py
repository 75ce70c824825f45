"""Building blocks of the StyleGAN2 generator and discriminator.

Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020):

- :class:`SynthesisLayer`: a 3x3 modulated/demodulated convolution (Sec. 2.2, eq. 1-3) with optional 2x
upsampling,
  per-pixel noise ``B`` scaled by a learned per-layer strength, bias and leaky ReLU.
- :class:`ToRGBLayer`: a 1x1 modulated convolution without demodulation (the tRGB layers of Fig. 7).
- :class:`SynthesisBlock`: one resolution of the synthesis network in the ``orig``, ``skip`` or ``resnet``
  architecture (Fig. 7); the first block starts from a learned constant ``4 x 4`` input.
- :class:`DiscriminatorBlock`, :class:`MinibatchStdLayer`, :class:`DiscriminatorEpilogue`: one resolution of
the
  discriminator, the minibatch standard deviation feature (Karras et al. 2018, Sec. 3) and the 4x4 output
  head with optional projection conditioning (Miyato & Koyama 2018).

Module and parameter names are the official ones (``affine``, ``weight``, ``bias``, ``noise_const``,
``noise_strength``, ``const``, ``conv0``, ``conv1``, ``torgb``, ``skip``, ``fromrgb``, ``mbstd``, ``conv``,
``fc``, ``out``), so official weights map one to one. The resampling filters derive from the config and are
non-persistent buffers. Every layer calling an op keeps ``ops_impl`` (``"auto"``) and passes it as ``impl=``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from styleforge.layers.equalized import EqualizedConv2d, EqualizedLinear
from styleforge.ops.bias_act import ACTIVATIONS, bias_act
from styleforge.ops.filters import setup_filter
from styleforge.ops.modulated_conv import modulated_conv2d
from styleforge.ops.upfirdn2d import downsample2d, upsample2d
from styleforge.utils.errors import UserInputError

__all__ = [
    "NOISE_MODES",
    "ARCHITECTURES",
    "RESNET_GAIN",
    "SynthesisLayer",
    "ToRGBLayer",
    "SynthesisBlock",
    "DiscriminatorBlock",
    "MinibatchStdLayer",
    "DiscriminatorEpilogue",
    "block_dtype",
]

#: how the per-pixel noise inputs are drawn: fresh Gaussian noise, the stored ``noise_const`` buffer, or no
# noise
NOISE_MODES = ("random", "const", "none")
#: the three generator/discriminator topologies of StyleGAN2 Fig. 7
ARCHITECTURES = ("orig", "skip", "resnet")
#: residual branches are summed with weight 1/sqrt(2) each to keep the variance (StyleGAN2 Appendix B)
RESNET_GAIN = math.sqrt(0.5)
#: the default low-pass filter of every 2x resampling: binomial [1, 3, 3, 1]
DEFAULT_RESAMPLE_FILTER = (1, 3, 3, 1)
#: epsilon of the minibatch standard deviation
MBSTD_EPS = 1e-8


def _activation_gain(activation: str) -> float:
    """The default gain of an activation (sqrt(2) for lrelu, 1 for linear)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    return float(ACTIVATIONS[activation].def_gain)


def block_dtype(use_fp16: bool, device: torch.device, force_fp32: bool = False) -> torch.dtype:
    """The compute dtype of a block: float16 only when the block asks for it and runs on CUDA."""
    if use_fp16 and not force_fp32 and device.type == "cuda":
        return torch.float16
    return torch.float32


def check_noise_mode(noise_mode: str) -> None:
    """Raise a clear error for an unknown ``noise_mode``."""
    if noise_mode not in NOISE_MODES:
        raise UserInputError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}.")


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution + noise + bias + activation (StyleGAN2 Fig. 2c).

    With style ``s = affine(w)`` (initialised around 1), the weight is ``w'_ijk = s_i w_ijk`` and demodulated
    by ``1 / sqrt(sum_ik w'_ijk^2 + eps)`` (eq. 1 and 3). Then ``x <- act(conv(x) + noise_strength * B + b) *
    gain``.

    Shapes: ``x`` ``[N, in_channels, resolution / up, resolution / up]`` -> ``[N, out_channels, resolution,
    resolution]``; ``w`` ``[N, w_dim]``.
    """

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of output channels.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        resolution: int,  # Output resolution of this layer.
        kernel_size: int = 3,  # Convolution kernel size.
        up: int = 1,  # Integer upsampling factor (1 or 2).
        use_noise: bool = True,  # Add per-pixel noise inputs (B)?
        activation: str = "lrelu",  # Activation after the bias.
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,  # Low-pass filter of the upsampling.
        conv_clamp: float | None = None,  # Clamp the output to +-conv_clamp, None = no clamping.
        channels_last: bool = False,  # Store the weight in channels_last format (fp16 speed-up on CUDA).
        size: tuple[int, int] | None = None,  # Output (H, W) of a non-square layer, None = resolution x resolution.
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.size = (resolution, resolution) if size is None else (int(size[0]), int(size[1]))
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = _activation_gain(activation)
        self.ops_impl = "auto"
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        if use_noise:
            self.register_buffer("noise_const", torch.randn(list(self.size)))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool = True,
        gain: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Apply the layer.

        Args:
            x: ``[N, in_channels, H, W]`` activations.
            w: ``[N, w_dim]`` the w of this layer.
            noise_mode: ``"random"`` (fresh ``N(0, 1)`` noise, drawn with ``generator``), ``"const"`` (the
            stored
                ``noise_const``) or ``"none"``.
            fused_modconv: compute the modulated convolution as one grouped convolution (inference) rather
            than by
                scaling activations (training).
            gain: extra output gain (``sqrt(0.5)`` on the residual branch of the ``resnet`` architecture);
            also
                scales the clamp.
            generator: random generator for ``noise_mode="random"``.
        """
        check_noise_mode(noise_mode)
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            shape = [x.shape[0], 1, *self.size]
            noise = torch.randn(shape, device=x.device, dtype=torch.float32, generator=generator)
            noise = noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=(self.up == 1),
            fused_modconv=fused_modconv,
            impl=self.ops_impl,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(
            x,
            self.bias.to(x.dtype),
            act=self.activation,
            gain=self.act_gain * gain,
            clamp=clamp,
            impl=self.ops_impl,
        )

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
            f"resolution={self.resolution}, up={self.up}, activation={self.activation}, "
            f"use_noise={self.use_noise}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation, plus bias (the tRGB layers).

    Shapes: ``x`` ``[N, in_channels, H, W]``, ``w`` ``[N, w_dim]`` -> ``[N, out_channels, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of image channels.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        kernel_size: int = 1,  # Convolution kernel size.
        conv_clamp: float | None = None,  # Clamp the output to +-conv_clamp, None = no clamping.
        channels_last: bool = False,  # Store the weight in channels_last format.
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.ops_impl = "auto"
        # He-style equalised learning rate folded into the styles: 1 / sqrt(fan_in).
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(
            x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv, impl=self.ops_impl
        )
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, impl=self.ops_impl)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}"


class SynthesisBlock(nn.Module):
    """One resolution of the StyleGAN2 synthesis network.

    The first block (``in_channels == 0``) starts from the learned constant ``const`` ``[C, 4, 4]`` and has
    one convolution (``conv1``); the others upsample with ``conv0`` (up=2) and then apply ``conv1``.
    Architectures (StyleGAN2 Fig. 7): ``orig`` (only the last block outputs RGB), ``skip`` (every block adds
    its tRGB output to the upsampled image so far), ``resnet`` (residual 1x1 ``skip`` branch around the two
    convolutions; RGB only at the end).

    It consumes ``num_conv + num_torgb`` consecutive ws: ``ws`` ``[N, num_conv + num_torgb, w_dim]``.
    """

    def __init__(
        self,
        in_channels: int,  # Number of input channels, 0 = first block.
        out_channels: int,  # Number of output channels.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        resolution: int,  # Resolution of this block.
        img_channels: int,  # Number of output colour channels.
        is_last: bool,  # Is this the last block?
        architecture: str = "skip",  # 'orig', 'skip' or 'resnet'.
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,  # Low-pass filter of the resampling.
        conv_clamp: float | None = 256,  # Clamp the convolution outputs to +-X, None = no clamping.
        use_fp16: bool = False,  # Compute this block in float16 (CUDA only)?
        fp16_channels_last: bool = False,  # Use channels_last with float16?
        fused_modconv_default: bool | str = True,  # True, False or 'inference_only' (= not training).
        use_noise: bool = True,  # Per-pixel noise inputs?
        size: tuple[int, int] | None = None,  # Output (H, W) of a non-square block, None = resolution x resolution.
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise UserInputError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.fused_modconv_default = fused_modconv_default
        # Runtime speed knob, not part of the config: keep the activations in channels_last on CPU. Measured
        # within the noise of the default layout (config F, 256 px, batch 1, one thread), so off by default.
        self.cpu_channels_last = False
        self.ops_impl = "auto"
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.num_conv = 0
        self.num_torgb = 0

        layer_kwargs = dict(
            w_dim=w_dim,
            resolution=resolution,
            conv_clamp=conv_clamp,
            channels_last=self.channels_last,
            use_noise=use_noise,
            size=size,
        )
        if in_channels == 0:  # [C, H, W]: 4 x 4, or e.g. 3 x 4 for a 4:3 generator
            const_size = [resolution, resolution] if size is None else [int(size[0]), int(size[1])]
            self.const = nn.Parameter(torch.randn([out_channels, *const_size]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, up=2, resample_filter=resample_filter, **layer_kwargs
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(
                out_channels,
                img_channels,
                w_dim=w_dim,
                conv_clamp=conv_clamp,
                channels_last=self.channels_last,
            )
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = EqualizedConv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                up=2,
                resample_filter=resample_filter,
                channels_last=self.channels_last,
            )

    def resolve_fused_modconv(self, fused_modconv: bool | str | None) -> bool:
        """``None`` -> the block default; ``'inference_only'`` -> fused when not training."""
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == "inference_only":
            return not self.training
        return bool(fused_modconv)

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool | str | None = None,
        force_fp32: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the block.

        Args:
            x: ``[N, in_channels, R/2, R/2]`` features of the previous block (``None`` for the first block).
            img: ``[N, img_channels, R/2, R/2]`` float32 image so far (``None`` until a block outputs RGB).
            ws: ``[N, num_conv + num_torgb, w_dim]``.

        Returns:
            ``(x, img)``: ``[N, out_channels, R, R]`` features and the float32 image ``[N, img_channels, R,
            R]`` (``None`` for non-last blocks of the ``orig`` and ``resnet`` architectures).
        """
        w_iter: Iterator[torch.Tensor] = iter(ws.unbind(dim=1))
        dtype = block_dtype(self.use_fp16, ws.device, force_fp32)
        on_cuda_fp16 = dtype == torch.float16
        use_channels_last = (self.channels_last and on_cuda_fp16) or (
            ws.device.type == "cpu" and self.cpu_channels_last
        )
        memory_format = torch.channels_last if use_channels_last else torch.contiguous_format
        fused = self.resolve_fused_modconv(fused_modconv)
        layer_kwargs = dict(noise_mode=noise_mode, fused_modconv=fused, generator=generator)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = x.contiguous(memory_format=memory_format)
            x = self.conv1(x, next(w_iter), **layer_kwargs)
        else:
            if x is None:
                raise ValueError(f"block b{self.resolution} needs the features of the previous block")
            x = x.to(dtype=dtype, memory_format=memory_format)
            if self.architecture == "resnet":
                y = self.skip(x, gain=RESNET_GAIN)
                x = self.conv0(x, next(w_iter), **layer_kwargs)
                x = self.conv1(x, next(w_iter), gain=RESNET_GAIN, **layer_kwargs)
                x = y + x
            else:
                x = self.conv0(x, next(w_iter), **layer_kwargs)
                x = self.conv1(x, next(w_iter), **layer_kwargs)

        if img is not None:
            img = upsample2d(img, self.resample_filter, impl=self.ops_impl)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = y if img is None else img + y
        return x, img

    def extra_repr(self) -> str:
        return (
            f"resolution={self.resolution}, architecture={self.architecture}, "
            f"in_channels={self.in_channels}, "
            f"out_channels={self.out_channels}, use_fp16={self.use_fp16}"
        )


class DiscriminatorBlock(nn.Module):
    """One resolution of the StyleGAN2 discriminator: ``[N, tmp, R, R]`` -> ``[N, out, R/2, R/2]``.

    ``fromrgb`` (1x1) turns the image into features in the first block (``in_channels == 0``) or, in the
    ``skip`` architecture, in every block (the image is then downsampled along). ``conv0`` (3x3) and
    ``conv1`` (3x3, down 2) follow, with a residual 1x1 ``skip`` branch in the ``resnet`` architecture.

    Layers whose global index (counted from the highest resolution) is below ``freeze_layers`` are frozen:
    their weights are buffers rather than parameters (training-time option, Mo et al. 2020 "Freeze the
    Discriminator").
    """

    def __init__(
        self,
        in_channels: int,  # Number of input channels, 0 = first block.
        tmp_channels: int,  # Number of intermediate channels.
        out_channels: int,  # Number of output channels.
        resolution: int,  # Resolution of this block.
        img_channels: int,  # Number of input colour channels.
        first_layer_idx: int,  # Global index of the first layer of this block.
        architecture: str = "resnet",  # 'orig', 'skip' or 'resnet'.
        activation: str = "lrelu",  # Activation of the convolutions.
        resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,  # Low-pass filter of the resampling.
        conv_clamp: float | None = None,  # Clamp the convolution outputs to +-X, None = no clamping.
        use_fp16: bool = False,  # Compute this block in float16 (CUDA only)?
        fp16_channels_last: bool = False,  # Use channels_last with float16?
        freeze_layers: int = 0,  # Freeze the first this-many layers of the whole discriminator.
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise UserInputError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}.")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.ops_impl = "auto"
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.num_layers = 0

        def trainable() -> bool:
            layer_idx = first_layer_idx + self.num_layers
            self.num_layers += 1
            return layer_idx >= freeze_layers

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = EqualizedConv2d(
                img_channels, tmp_channels, kernel_size=1, trainable=trainable(), **common
            )
        self.conv0 = EqualizedConv2d(
            tmp_channels, tmp_channels, kernel_size=3, trainable=trainable(), **common
        )
        self.conv1 = EqualizedConv2d(
            tmp_channels,
            out_channels,
            kernel_size=3,
            down=2,
            resample_filter=resample_filter,
            trainable=trainable(),
            **common,
        )
        if architecture == "resnet":
            self.skip = EqualizedConv2d(
                tmp_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                down=2,
                resample_filter=resample_filter,
                trainable=trainable(),
                channels_last=self.channels_last,
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``: ``[N, in_channels, R, R]`` (``None`` in the first block), ``img``: ``[N, C_img, R, R]``."""
        device = (x if x is not None else img).device
        dtype = block_dtype(self.use_fp16, device, force_fp32)
        memory_format = (
            torch.channels_last if self.channels_last and dtype == torch.float16 else torch.contiguous_format
        )
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = y if x is None else x + y
            img = (
                downsample2d(img, self.resample_filter, impl=self.ops_impl)
                if self.architecture == "skip"
                else None
            )
        if self.architecture == "resnet":
            y = self.skip(x, gain=RESNET_GAIN)
            x = self.conv0(x)
            x = self.conv1(x, gain=RESNET_GAIN)
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}"


class MinibatchStdLayer(nn.Module):
    """Append the minibatch standard deviation as extra feature maps (Karras et al. 2018, Sec. 3).

    The batch is split into groups of ``group_size`` samples (sample ``i`` is in group ``i % (N / G)``);
    within each group the standard deviation of every feature is averaged over ``C / num_channels`` channels
    and all pixels, giving ``num_channels`` numbers per group that are broadcast to constant maps. ``[N, C,
    H, W]`` -> ``[N, C + num_channels, H, W]``. ``N`` must be divisible by ``min(group_size, N)``.
    """

    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g != 0:
            raise UserInputError(
                f"the discriminator's minibatch standard deviation needs a batch size divisible by {g}, "
                f"got {n}; "
                "use a multiple of mbstd_group_size"
            )
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, M, F, c, H, W], sample = g * M + m
        y = y - y.mean(dim=0)  # deviation from the group mean
        y = (y.square().mean(dim=0) + MBSTD_EPS).sqrt()  # [M, F, c, H, W] standard deviation
        y = y.mean(dim=[2, 3, 4])  # [M, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head of the discriminator: mbstd, 3x3 conv, fully connected, output (``b4``).

    Unconditional: ``[N, C, 4, 4]`` -> ``[N, 1]`` logits. Conditional (``cmap_dim > 0``): the output layer
    gives a ``cmap_dim`` vector that is projected onto the mapped label ``cmap``: ``sum(out * cmap) /
    sqrt(cmap_dim)``.
    """

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        cmap_dim: int,  # Dimensionality of the mapped label, 0 = unconditional.
        resolution: int,  # Resolution of this block (4).
        img_channels: int,  # Number of input colour channels.
        architecture: str = "resnet",  # 'orig', 'skip' or 'resnet'.
        mbstd_group_size: int | None = 4,  # Group size of the minibatch stddev, None = whole batch.
        mbstd_num_channels: int = 1,  # Number of minibatch stddev features, 0 = disable.
        activation: str = "lrelu",  # Activation.
        conv_clamp: float | None = None,  # Clamp the convolution output to +-X, None = no clamping.
        size: tuple[int, int] | None = None,  # Input (H, W) of a non-square head (e.g. 3 x 4), None = square.
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise UserInputError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}.")
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = EqualizedConv2d(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = (
            MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        )
        self.conv = EqualizedConv2d(
            in_channels + mbstd_num_channels,
            in_channels,
            kernel_size=3,
            activation=activation,
            conv_clamp=conv_clamp,
        )
        num_pixels = resolution**2 if size is None else int(size[0]) * int(size[1])
        self.fc = EqualizedLinear(in_channels * num_pixels, in_channels, activation=activation)
        self.out = EqualizedLinear(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None) -> torch.Tensor:
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, cmap_dim={self.cmap_dim}, architecture={self.architecture}"

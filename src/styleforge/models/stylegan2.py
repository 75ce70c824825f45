"""StyleGAN2 generator and discriminator.

Paper: Tero Karras, Samuli Laine, Miika Aittala, Janne Hellsten, Jaakko Lehtinen, Timo Aila, "Analyzing and
Improving the Image Quality of StyleGAN", CVPR 2020 (arXiv:1912.04958). Conditioning, mixed precision and the
training configurations follow Karras et al., "Training Generative Adversarial Networks with Limited Data",
NeurIPS 2020 (arXiv:2006.06676)::

    @inproceedings{Karras2020stylegan2,
      title     = {Analyzing and Improving the Image Quality of {StyleGAN}},
      author    = {Karras, Tero and Laine, Samuli and Aittala, Miika and Hellsten, Janne and Lehtinen, Jaakko
                   and Aila, Timo},
      booktitle = {Proc. CVPR},
      year      = {2020}
    }

This is an independent implementation written from the papers. It computes the same function as NVIDIA's
official networks (``training/networks_stylegan2.py`` of NVlabs/stylegan3), keeps their module names where
they are descriptive (``mapping.fc0``, ``synthesis.b4.const``, ``synthesis.b8.conv0.affine``,
``b32.fromrgb``, ``b4.mbstd``,
...) so that ``styleforge.convert`` can load official weights, and reproduces official outputs to 1e-4 in
float32. Official weights are released by NVIDIA under their own (non-commercial) licence; converting them
does not change it.

Configs are flat frozen dataclasses: the official ``mapping_kwargs`` appear as ``mapping_*`` fields, the
discriminator's ``block_kwargs`` / ``epilogue_kwargs`` as ``freeze_layers`` and ``mbstd_*`` fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from styleforge.layers.mapping import MAPPING_LR_MULTIPLIER, W_AVG_BETA, MappingNetwork
from styleforge.layers.stylegan2_blocks import (
    ARCHITECTURES,
    DEFAULT_RESAMPLE_FILTER,
    DiscriminatorBlock,
    DiscriminatorEpilogue,
    SynthesisBlock,
    check_noise_mode,
)
from styleforge.models.base import (
    Network,
    aspect_image_size,
    check_cond_encoding,
    check_img_aspect,
    register_network,
)
from styleforge.models.registry import Preset, register_preset
from styleforge.utils.errors import UserInputError

__all__ = [
    "StyleGAN2GeneratorConfig",
    "StyleGAN2DiscriminatorConfig",
    "StyleGAN2Synthesis",
    "StyleGAN2Generator",
    "StyleGAN2Discriminator",
    "channels_for_resolution",
    "base_size",
    "block_size",
    "fp16_resolution",
]

#: channel count at resolution r: min(channel_base / r, channel_max) (config F: channel_base = 32768, max 512)
CONFIG_F_CHANNEL_BASE = 32768
CONFIG_F_CHANNEL_MAX = 512
#: the official training sets conv_clamp = 256 together with mixed precision on the 4 highest resolutions
DEFAULT_CONV_CLAMP = 256
DEFAULT_NUM_FP16_RES = 4
#: fp16 is never used below this resolution
MIN_FP16_RESOLUTION = 8
#: the smallest resolution of the synthesis network (the learned constant) and of the discriminator head
BASE_RESOLUTION = 4
FUSED_MODCONV_CHOICES = (True, False, "inference_only")


def channels_for_resolution(res: int, channel_base: int, channel_max: int) -> int:
    """Number of feature maps at resolution ``res``: ``min(channel_base // res, channel_max)``."""
    return min(channel_base // res, channel_max)


def fp16_resolution(img_resolution: int, num_fp16_res: int) -> int:
    """Lowest resolution computed in float16 when ``num_fp16_res`` highest resolutions use it (at least 8)."""
    return max(2 ** (int(math.log2(img_resolution)) + 1 - num_fp16_res), MIN_FP16_RESOLUTION)


def _check_resolution(name: str, res: int, minimum: int = BASE_RESOLUTION) -> None:
    if not isinstance(res, int) or res < minimum or res & (res - 1) != 0:
        raise UserInputError(
            f"{name} must be a power of two >= {minimum} ({minimum}, ..., 1024), got {res!r}."
        )


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or v <= 0:
            raise UserInputError(f"{name} must be a positive integer, got {v!r}.")


def base_size(img_aspect: tuple[int, int] | None) -> tuple[int, int]:
    """``(H, W)`` of the lowest level (the constant input of G, the head of D): 4 x 4, or e.g. 3 x 4 for 4:3.

    The longer side is :data:`BASE_RESOLUTION`; the shorter one must be a whole number of pixels, so the
    non-square aspect ratios are 4:3, 3:4, 2:1, 1:2, 4:1 and 1:4 (and multiples such as 8:6).
    """
    check_img_aspect(img_aspect)
    try:
        w, h = aspect_image_size(BASE_RESOLUTION, img_aspect)
    except UserInputError:
        raise UserInputError(
            f"StyleGAN2 builds a non-square image from a {BASE_RESOLUTION}-pixel base whose shorter side must be a "
            f"whole number of pixels; img_aspect {img_aspect[0]}:{img_aspect[1]} is not possible. Use 4:3, 3:4, "
            "2:1, 1:2, 4:1 or 1:4 (crop or pad the dataset to one of them)."
        ) from None
    return h, w


def block_size(res: int, img_aspect: tuple[int, int] | None) -> tuple[int, int] | None:
    """``(H, W)`` of the block named ``b{res}`` of a non-square network, ``None`` for a square one."""
    if img_aspect is None or img_aspect[0] == img_aspect[1]:
        return None
    h, w = base_size(img_aspect)
    return h * res // BASE_RESOLUTION, w * res // BASE_RESOLUTION


def _check_architecture(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise UserInputError(f"architecture must be one of {ARCHITECTURES}, got {arch!r}.")


@dataclass(frozen=True)
class StyleGAN2GeneratorConfig:
    """Every constructor argument of the StyleGAN2 generator (official ``Generator`` kwargs, flattened).

    Mapping network (official ``mapping_kwargs``): ``mapping_layers`` (``num_layers``),
    ``mapping_embed_features``, ``mapping_layer_features``, ``mapping_activation``,
    ``mapping_lr_multiplier``, ``w_avg_beta``. Synthesis network (official ``synthesis_kwargs``): the
    remaining fields.
    """

    z_dim: int = 512  # Input latent (Z) dimensionality.
    c_dim: int = 0  # Conditioning label (C) dimensionality, 0 = unconditional.
    w_dim: int = 512  # Intermediate latent (W) dimensionality.
    img_resolution: int = 256  # Output resolution (power of two; the longer side of a non-square image).
    img_channels: int = 3  # Number of output colour channels.
    mapping_layers: int = 8  # Number of mapping layers.
    mapping_embed_features: int | None = None  # Label embedding width, None = w_dim.
    mapping_layer_features: int | None = None  # Mapping hidden width, None = w_dim.
    mapping_activation: str = "lrelu"  # Activation of the mapping layers.
    mapping_lr_multiplier: float = MAPPING_LR_MULTIPLIER  # Learning-rate multiplier of the mapping layers.
    w_avg_beta: float = W_AVG_BETA  # Decay of the tracked average of w (truncation centre).
    architecture: str = "skip"  # 'orig', 'skip' or 'resnet' (StyleGAN2 Fig. 7).
    channel_base: int = CONFIG_F_CHANNEL_BASE  # Channels at res r: min(channel_base // r, channel_max).
    channel_max: int = CONFIG_F_CHANNEL_MAX  # Maximum number of channels in any layer.
    num_fp16_res: int = DEFAULT_NUM_FP16_RES  # float16 in the N highest resolutions (CUDA only).
    conv_clamp: float | None = DEFAULT_CONV_CLAMP  # Clamp convolution outputs to +-X, None = no clamping.
    resample_filter: tuple[float, ...] = DEFAULT_RESAMPLE_FILTER  # Low-pass filter of the 2x upsampling.
    use_noise: bool = True  # Per-pixel noise inputs.
    fused_modconv_default: bool | str = "inference_only"  # True, False or 'inference_only' (= not training).
    fp16_channels_last: bool = False  # channels_last memory format in the float16 blocks.
    stored_filters: bool = False  # Keep each layer's resampling filter in the state dict (converted checkpoints
    # whose stored blur kernels differ from resample_filter) instead of deriving it from resample_filter.
    img_aspect: tuple[int, int] | None = None  # (W, H) aspect ratio of a non-square output, e.g. (4, 3) for a
    # 4x3 constant and 32x24 images at img_resolution 32; None = square.
    cond_encoding: str = "class"  # What c holds: 'class' (one-hot), 'multi-label' (multi-hot) or 'continuous'.

    def __post_init__(self) -> None:
        _check_positive(
            z_dim=self.z_dim,
            w_dim=self.w_dim,
            img_channels=self.img_channels,
            mapping_layers=self.mapping_layers,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
        )
        if not isinstance(self.c_dim, int) or self.c_dim < 0:
            raise UserInputError(f"c_dim must be an integer >= 0, got {self.c_dim!r}.")
        _check_resolution("img_resolution", self.img_resolution)
        base_size(self.img_aspect)
        check_cond_encoding(self.cond_encoding)
        _check_architecture(self.architecture)
        if self.fused_modconv_default not in FUSED_MODCONV_CHOICES:
            raise UserInputError(
                f"fused_modconv_default must be one of {FUSED_MODCONV_CHOICES}, "
                f"got {self.fused_modconv_default!r}."
            )
        if self.num_fp16_res < 0:
            raise UserInputError(f"num_fp16_res must be >= 0, got {self.num_fp16_res}.")


@dataclass(frozen=True)
class StyleGAN2DiscriminatorConfig:
    """Every constructor argument of the StyleGAN2 discriminator (the official kwargs, flattened).

    Official ``block_kwargs``: ``freeze_layers``; ``epilogue_kwargs``: ``mbstd_group_size``,
    ``mbstd_num_channels``; ``mapping_kwargs`` (label mapping of a conditional D): the ``mapping_*`` fields.
    """

    c_dim: int = 0  # Conditioning label (C) dimensionality, 0 = unconditional.
    img_resolution: int = 256  # Input resolution (power of two; the longer side of a non-square image).
    img_channels: int = 3  # Number of input colour channels.
    architecture: str = "resnet"  # 'orig', 'skip' or 'resnet'.
    channel_base: int = CONFIG_F_CHANNEL_BASE  # Channels at res r: min(channel_base // r, channel_max).
    channel_max: int = CONFIG_F_CHANNEL_MAX  # Maximum number of channels in any layer.
    num_fp16_res: int = DEFAULT_NUM_FP16_RES  # float16 in the N highest resolutions (CUDA only).
    conv_clamp: float | None = DEFAULT_CONV_CLAMP  # Clamp convolution outputs to +-X, None = no clamping.
    cmap_dim: int | None = None  # Mapped label dimensionality, None = channels at 4x4.
    resample_filter: tuple[float, ...] = DEFAULT_RESAMPLE_FILTER  # Low-pass filter of the 2x downsampling.
    activation: str = "lrelu"  # Activation of the convolutions and of the fc layer.
    freeze_layers: int = 0  # Freeze the first N layers (training-time option).
    mbstd_group_size: int | None = 4  # Minibatch stddev group size, None = whole batch.
    mbstd_num_channels: int = 1  # Minibatch stddev features, 0 = disable.
    mapping_layers: int = 8  # Layers of the label mapping network (conditional D); 0 = the label embedding only.
    mapping_layer_features: int | None = None  # Hidden width of the label mapping, None = cmap_dim.
    mapping_activation: str = "lrelu"  # Activation of the label mapping.
    mapping_lr_multiplier: float = MAPPING_LR_MULTIPLIER  # Learning-rate multiplier of the label mapping.
    fp16_channels_last: bool = False  # channels_last memory format in the float16 blocks.
    img_aspect: tuple[int, int] | None = None  # (W, H) aspect ratio of non-square input images (head e.g. 4x3).

    def __post_init__(self) -> None:
        _check_positive(
            img_channels=self.img_channels,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
        )
        if not isinstance(self.mapping_layers, int) or self.mapping_layers < 0:
            raise UserInputError(f"mapping_layers must be an integer >= 0, got {self.mapping_layers!r}.")
        if not isinstance(self.c_dim, int) or self.c_dim < 0:
            raise UserInputError(f"c_dim must be an integer >= 0, got {self.c_dim!r}.")
        # the discriminator needs at least one downsampling block before its 4x4 head
        _check_resolution("img_resolution", self.img_resolution, minimum=2 * BASE_RESOLUTION)
        base_size(self.img_aspect)
        _check_architecture(self.architecture)
        if self.mbstd_num_channels < 0:
            raise UserInputError(f"mbstd_num_channels must be >= 0, got {self.mbstd_num_channels}.")
        if self.freeze_layers < 0:
            raise UserInputError(f"freeze_layers must be >= 0, got {self.freeze_layers}.")


class StyleGAN2Synthesis(nn.Module):
    """The synthesis network g: ``ws [N, num_ws, w_dim]`` -> images ``[N, img_channels, R, R]``.

    Blocks ``b4, b8, ..., bR``; block ``b{r}`` has ``min(channel_base // r, channel_max)`` channels.
    Consecutive
    blocks share one w: block ``b{r}`` reads ws from the index where its convolutions start, and its tRGB
    layer reads the w of the next block's first convolution. Output images are float32, nominally in ``[-1,
    1]`` (not clamped).
    """

    def __init__(self, config: StyleGAN2GeneratorConfig) -> None:
        super().__init__()
        cfg = config
        self.w_dim = cfg.w_dim
        self.img_resolution = cfg.img_resolution
        self.img_width, self.img_height = aspect_image_size(cfg.img_resolution, cfg.img_aspect)
        self.img_channels = cfg.img_channels
        log2 = int(math.log2(cfg.img_resolution))
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        first_fp16 = fp16_resolution(cfg.img_resolution, cfg.num_fp16_res)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = (
                channels_for_resolution(res // 2, cfg.channel_base, cfg.channel_max) if res > 4 else 0
            )
            out_channels = channels_for_resolution(res, cfg.channel_base, cfg.channel_max)
            is_last = res == cfg.img_resolution
            block = SynthesisBlock(
                in_channels,
                out_channels,
                w_dim=cfg.w_dim,
                resolution=res,
                img_channels=cfg.img_channels,
                is_last=is_last,
                architecture=cfg.architecture,
                resample_filter=cfg.resample_filter,
                conv_clamp=cfg.conv_clamp,
                use_fp16=cfg.num_fp16_res > 0 and res >= first_fp16,
                fp16_channels_last=cfg.fp16_channels_last,
                fused_modconv_default=cfg.fused_modconv_default,
                use_noise=cfg.use_noise,
                size=block_size(res, cfg.img_aspect),
            )
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def blocks(self) -> list[SynthesisBlock]:
        """The synthesis blocks from 4x4 to the output resolution."""
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "random",
        update_emas: bool = False,
        fused_modconv: bool | str | None = None,
        force_fp32: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Synthesise images from per-layer latents.

        Args:
            ws: ``[N, num_ws, w_dim]``.
            noise_mode: ``"random"`` (official default; fresh noise from ``generator``), ``"const"`` or
            ``"none"``.
            update_emas: accepted for the official call convention; StyleGAN2 synthesis keeps no EMAs.
            fused_modconv: ``None`` = the config's ``fused_modconv_default``; ``True``/``False`` forces a
            path.
            force_fp32: compute every block in float32 even on CUDA.
            generator: random generator for ``noise_mode="random"``.

        Returns:
            ``[N, img_channels, img_height, img_width]`` float32 (``img_height = img_width = img_resolution``
            unless ``img_aspect`` is set).
        """
        del update_emas  # nothing to update in StyleGAN2 synthesis
        check_noise_mode(noise_mode)
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(
                f"synthesis expects ws of shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}"
            )
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for block in self.blocks():
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(
                x,
                img,
                block_ws,
                noise_mode=noise_mode,
                fused_modconv=fused_modconv,
                force_fp32=force_fp32,
                generator=generator,
            )
        return img

    def extra_repr(self) -> str:
        size = "" if self.img_width == self.img_height else f", size={self.img_width}x{self.img_height}"
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}{size}"


@register_network
class StyleGAN2Generator(Network):
    """StyleGAN2 generator ``G(z, c) = synthesis(mapping(z, c))``.

    Attributes: ``z_dim``, ``c_dim``, ``w_dim``, ``img_resolution``, ``img_channels``, ``num_ws``, ``mapping``
    (:class:`~styleforge.layers.mapping.MappingNetwork`), ``synthesis`` (:class:`StyleGAN2Synthesis`).
    """

    config_class = StyleGAN2GeneratorConfig

    def __init__(self, config: StyleGAN2GeneratorConfig) -> None:
        super().__init__(config)
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_width, self.img_height = aspect_image_size(config.img_resolution, config.img_aspect)
        self.img_channels = config.img_channels
        self.synthesis = StyleGAN2Synthesis(config)
        if config.stored_filters:  # the filters in use become persistent buffers, loaded with the weights
            for module in self.synthesis.modules():
                used = getattr(module, "up", 1) > 1 or (  # up-sampling convolutions; blocks that up-sample the image
                    getattr(module, "resolution", 0) > BASE_RESOLUTION and getattr(module, "architecture", "") == "skip"
                )
                if "resample_filter" in module._buffers and used:
                    module.register_buffer("resample_filter", module.resample_filter, persistent=True)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=config.z_dim,
            c_dim=config.c_dim,
            w_dim=config.w_dim,
            num_ws=self.num_ws,
            num_layers=config.mapping_layers,
            embed_features=config.mapping_embed_features,
            layer_features=config.mapping_layer_features,
            activation=config.mapping_activation,
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
        fused_modconv: bool | str | None = None,
        force_fp32: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Generate images.

        Args:
            z: ``[N, z_dim]`` latents, usually ``N(0, I)``.
            c: ``[N, c_dim]`` one-hot labels (``None`` or ``[N, 0]`` when unconditional).
            truncation_psi: psi of the truncation trick (1 = none).
            truncation_cutoff: truncate only the first this-many ws (``None`` = all).
            noise_mode: ``"const"`` (default here, for reproducible images), ``"random"`` or ``"none"``.
            update_emas: update ``mapping.w_avg`` (training).
            fused_modconv, force_fp32, generator: see :meth:`StyleGAN2Synthesis.forward`.

        Returns:
            ``[N, img_channels, img_height, img_width]`` float32 images, nominally in ``[-1, 1]``.
        """
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesis(
            ws,
            noise_mode=noise_mode,
            update_emas=update_emas,
            fused_modconv=fused_modconv,
            force_fp32=force_fp32,
            generator=generator,
        )


@register_network
class StyleGAN2Discriminator(Network):
    """StyleGAN2 discriminator ``D(img, c)`` -> logits ``[N, 1]``.

    Blocks ``b{R}, ..., b8`` halve the resolution; ``b4`` is the :class:`DiscriminatorEpilogue`. A
    conditional D maps ``c`` with ``mapping`` (a :class:`MappingNetwork` with ``z_dim = 0``) to ``cmap`` and
    projects the output onto it. Also used as the discriminator of StyleGAN3.
    """

    config_class = StyleGAN2DiscriminatorConfig

    def __init__(self, config: StyleGAN2DiscriminatorConfig) -> None:
        super().__init__(config)
        cfg = config
        self.c_dim = cfg.c_dim
        self.img_resolution = cfg.img_resolution
        self.img_width, self.img_height = aspect_image_size(cfg.img_resolution, cfg.img_aspect)
        self.img_channels = cfg.img_channels
        log2 = int(math.log2(cfg.img_resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {
            res: channels_for_resolution(res, cfg.channel_base, cfg.channel_max)
            for res in [*self.block_resolutions, BASE_RESOLUTION]
        }
        first_fp16 = fp16_resolution(cfg.img_resolution, cfg.num_fp16_res)
        cmap_dim = channels[BASE_RESOLUTION] if cfg.cmap_dim is None else cfg.cmap_dim
        self.cmap_dim = cmap_dim if cfg.c_dim > 0 else 0

        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < cfg.img_resolution else 0,
                channels[res],
                channels[res // 2],
                resolution=res,
                img_channels=cfg.img_channels,
                first_layer_idx=layer_idx,
                architecture=cfg.architecture,
                activation=cfg.activation,
                resample_filter=cfg.resample_filter,
                conv_clamp=cfg.conv_clamp,
                use_fp16=cfg.num_fp16_res > 0 and res >= first_fp16,
                fp16_channels_last=cfg.fp16_channels_last,
                freeze_layers=cfg.freeze_layers,
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if cfg.c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0,
                c_dim=cfg.c_dim,
                w_dim=self.cmap_dim,
                num_ws=None,
                num_layers=cfg.mapping_layers,
                layer_features=cfg.mapping_layer_features,
                activation=cfg.mapping_activation,
                lr_multiplier=cfg.mapping_lr_multiplier,
                w_avg_beta=None,
            )
        self.b4 = DiscriminatorEpilogue(
            channels[BASE_RESOLUTION],
            cmap_dim=self.cmap_dim,
            resolution=BASE_RESOLUTION,
            img_channels=cfg.img_channels,
            architecture=cfg.architecture,
            mbstd_group_size=cfg.mbstd_group_size,
            mbstd_num_channels=cfg.mbstd_num_channels,
            activation=cfg.activation,
            conv_clamp=cfg.conv_clamp,
            size=block_size(BASE_RESOLUTION, cfg.img_aspect),
        )

    def forward(
        self,
        img: torch.Tensor,
        c: torch.Tensor | None = None,
        update_emas: bool = False,
        force_fp32: bool = False,
    ) -> torch.Tensor:
        """Score images.

        Args:
            img: ``[N, img_channels, img_height, img_width]`` images in ``[-1, 1]``.
            c: ``[N, c_dim]`` labels (``None`` or ``[N, 0]`` when unconditional).
            update_emas: accepted for the official call convention (no EMAs here).
            force_fp32: compute every block in float32 even on CUDA.

        Returns:
            ``[N, 1]`` float32 logits (real > fake).
        """
        del update_emas
        expected = [self.img_channels, self.img_height, self.img_width]
        if img.ndim != 4 or list(img.shape[1:]) != expected:
            fix = (
                f"img_resolution={img.shape[-1]}"
                if img.ndim == 4 and img.shape[-1] == img.shape[-2]
                else "the images' img_resolution and img_aspect (W, H)"
            )
            raise UserInputError(
                f"The discriminator expects images of shape [N, {', '.join(map(str, expected))}], got "
                f"{list(img.shape)}; resize the images or build D with {fix}."
            )
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)


# ------------------------------------------------------------------------------------------------------------
# Presets.


def _preset(
    name: str, description: str, g: StyleGAN2GeneratorConfig, d: StyleGAN2DiscriminatorConfig
) -> Preset:
    return Preset(
        name=name,
        G_class=StyleGAN2Generator,
        G_config=g,
        D_class=StyleGAN2Discriminator,
        D_config=d,
        description=description,
    )


@register_preset("stylegan2")
def stylegan2_config_f() -> Preset:
    """Config F of the StyleGAN2 paper (as trained by the official code): 8 mapping layers, z = w = 512,
    channel_base 32768, channel_max 512, skip G / resnet D, fp16 on the 4 highest resolutions with conv_clamp
    256. Default 256 px; override ``img_resolution`` with any power of two >= 4."""
    g = StyleGAN2GeneratorConfig()
    d = StyleGAN2DiscriminatorConfig()
    return _preset("stylegan2", "StyleGAN2 config F (skip G, resnet D), 256 px by default", g, d)


@register_preset("stylegan2-64")
def stylegan2_64() -> Preset:
    """A cheap training configuration at 64 px, in the spirit of the ADA paper's 'auto' config:
    half the channels of config F (channel_base 16384) and 2 mapping layers."""
    g = StyleGAN2GeneratorConfig(img_resolution=64, channel_base=16384, mapping_layers=2)
    d = StyleGAN2DiscriminatorConfig(img_resolution=64, channel_base=16384)
    return _preset("stylegan2-64", "StyleGAN2 at 64 px, half channels, 2 mapping layers", g, d)


@register_preset("stylegan2-tiny")
def stylegan2_tiny() -> Preset:
    """A tiny StyleGAN2 for tests: 16 px, 32 channels at most, z = w = 32, 2 mapping layers (runs in
    milliseconds)."""
    g = StyleGAN2GeneratorConfig(
        z_dim=32, w_dim=32, img_resolution=16, mapping_layers=2, channel_base=512, channel_max=32
    )
    d = StyleGAN2DiscriminatorConfig(img_resolution=16, channel_base=512, channel_max=32, mapping_layers=2)
    return _preset("stylegan2-tiny", "tiny StyleGAN2 for tests (16 px)", g, d)

"""StyleGAN-XL generators: the class-conditional StyleGAN3 stem and its super-resolution stages.

Paper:
    Axel Sauer, Katja Schwarz, Andreas Geiger. "StyleGAN-XL: Scaling StyleGAN to Large Diverse Datasets".
    SIGGRAPH 2022. https://arxiv.org/abs/2202.00273

    @inproceedings{Sauer2022,
      author    = {Axel Sauer and Katja Schwarz and Andreas Geiger},
      title     = {StyleGAN-XL: Scaling StyleGAN to Large Diverse Datasets},
      booktitle = {ACM SIGGRAPH 2022 Conference Proceedings},
      year      = {2022}
    }

An independent implementation written from the paper. The numerical conventions follow the official networks
(repository autonomousvision/stylegan-xl) so that their weights give the same images; see
``styleforge.convert.official_stylegan_xl``. Official weights come with their own licence (the StyleGAN-XL
code builds on NVIDIA's StyleGAN3 code, NVIDIA Source Code License, non-commercial); check it before using
them.

What differs from StyleGAN3 (:mod:`styleforge.models.stylegan3`, whose synthesis layers are reused here):

- **Mapping** (paper sec. 3.1): a low-dimensional ``z`` (64 by default) and a class embedding. The class index
  ``argmax(c)`` selects a row of an ``nn.Embedding`` table (``embed``, width 320: the official networks start
  it from the class embeddings of an ImageNet classifier; here it starts random, as with the official
  ``rand_embedding=True``), a fully connected layer with leaky ReLU (``embed_proj``) maps it to ``z_dim``, and
  the result is normalised and concatenated to the normalised ``z``. The average ``w_avg`` is kept *per class*
  (``[c_dim, w_dim]``) and truncation pulls each sample towards its own class's average.
- **Layer schedule**: StyleGAN3's geometric schedule with fewer layers (``num_layers``, 10 for the stem).
- **Progressive growing** (paper sec. 3.2): training starts with a 16 px stem; each later stage keeps every
  non-critically-sampled layer of the previous generator (with its weights), drops the critically sampled
  layers and ToRGB, and appends ``head_layers`` new layers plus a new ToRGB that raise the resolution by
  ``up_factor``. The new layers continue the geometric schedule from the last kept layer's cutoff to the new
  Nyquist frequency. :meth:`StyleGANXLGenerator.grow` does this on a trained network; the config lists every
  stage so that a grown network can be rebuilt from ``config.json``.
- **Non-square images** (``img_aspect``, not in the official code): as in StyleGAN3, ``img_resolution`` is the
  longer side and every layer samples both axes at its sampling rate over a ``W:H`` canvas
  (:func:`~styleforge.models.stylegan3.layer_sizes`), the stem and every super-resolution stage alike, so a grown
  network keeps the aspect ratio of the stem (a 16x12 stem grows to 32x24, 64x48, ...).

Module names: ``mapping.embed`` (``nn.Embedding``), ``mapping.embed_proj``, ``mapping.fc<i>``,
``mapping.w_avg``, ``synthesis.input`` and ``synthesis.layers.<i>`` (official name ``L<k>_<size>_<channels>``
from :meth:`StyleGANXLSynthesis.official_layer_name`). A new stage's layers are numbered from
``len(kept layers) + 1``, as in the official networks, so after the first stage ``k`` skips the number just
after the stem's kept layers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from styleforge.layers.equalized import EqualizedLinear
from styleforge.layers.mapping import MappingNetwork, normalize_2nd_moment
from styleforge.models.base import check_img_aspect, register_network
from styleforge.models.registry import Preset, register_preset
from styleforge.models.stylegan3 import (
    LayerSchedule,
    StyleGAN3Config,
    StyleGAN3Generator,
    StyleGAN3Synthesis,
    SynthesisLayer,
    layer_sizes,
)
from styleforge.utils.errors import UserInputError

__all__ = [
    "StyleGANXLConfig",
    "StyleGANXLMapping",
    "StyleGANXLSynthesis",
    "StyleGANXLGenerator",
    "superres_layer_schedule",
    "SUPERRES_UP_FACTORS",
]

#: width of the official class embedding table (the EfficientNet-lite0 ImageNet class embeddings)
DEFAULT_EMBED_DIM = 320
#: resolution increase of one super-resolution stage
SUPERRES_UP_FACTORS = (2, 4, 8, 16)
#: the official stage schedule always reaches the final cutoff this many layers before ToRGB (it does not read
#: ``num_critical`` there, although ``num_critical`` decides which new layers are critically sampled)
SUPERRES_SCHEDULE_CRITICAL = 2
#: the new layers of a super-resolution stage are built with the layer defaults, whatever the stem used
HEAD_LAYER_KWARGS = dict(
    conv_kernel=3,
    filter_size=6,
    lrelu_upsampling=2,
    use_radial_filters=False,
    conv_clamp=256.0,
    magnitude_ema_beta=0.999,
)
#: the smallest ``head_layers`` for which the stage schedule is defined
MIN_HEAD_LAYERS = SUPERRES_SCHEDULE_CRITICAL + 1


# ----------------------------------------------------------------------------------------------------------
# Configuration.


@dataclass(frozen=True)
class StyleGANXLConfig:
    """Configuration of a StyleGAN-XL generator: the stem plus any super-resolution stages.

    Attributes:
        z_dim, c_dim, w_dim: dimensions of z (64 in the paper), of the label c (0 = unconditional) and of w.
        img_resolution: *output* resolution; the stem makes ``img_resolution / prod(superres_up_factors)``.
        img_channels: output channels.
        mapping_layers: fully connected layers of the mapping network (2).
        mapping_lr_multiplier: learning-rate multiplier of the mapping layers (0.01).
        w_avg_beta: decay of the per-class average of w.
        embed_dim: width of the class embedding table (320).
        num_embeddings: rows of the class embedding table; ``None`` = ``c_dim``. The official table has one
            row per ImageNet class (1000) even when ``c_dim`` is smaller.
        channel_base ... magnitude_ema_beta: the stem's synthesis settings, as in
            :class:`~styleforge.models.stylegan3.StyleGAN3Config` (``num_layers`` = 10 for the XL stem).
        superres_head_layers: new layers (before ToRGB) of each super-resolution stage, in training order.
        superres_up_factors: resolution factor of each stage (2, 4, 8 or 16).
        img_aspect: ``(W, H)`` aspect ratio of non-square images (e.g. ``(4, 3)``), ``None`` = square (the
            official networks). ``img_resolution`` and ``stem_resolution`` are the longer sides; the stem's
            shorter side must be a whole number of pixels (16 px stem: 4:3 gives 16x12).
    """

    z_dim: int = 64
    c_dim: int = 1000
    w_dim: int = 512
    img_resolution: int = 16
    img_channels: int = 3
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998
    embed_dim: int = DEFAULT_EMBED_DIM
    num_embeddings: int | None = None
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 10
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
    superres_head_layers: tuple[int, ...] = ()
    superres_up_factors: tuple[int, ...] = ()
    img_aspect: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        heads, ups = tuple(self.superres_head_layers), tuple(self.superres_up_factors)
        object.__setattr__(self, "superres_head_layers", heads)
        object.__setattr__(self, "superres_up_factors", ups)
        if len(heads) != len(ups):
            raise UserInputError(
                f"superres_head_layers {heads} and superres_up_factors {ups} must have one entry per stage."
            )
        if any(u not in SUPERRES_UP_FACTORS for u in ups):
            raise UserInputError(f"superres_up_factors must each be one of {SUPERRES_UP_FACTORS}, got {ups}.")
        if any(h < max(MIN_HEAD_LAYERS, self.num_critical + 1) for h in heads):
            raise UserInputError(
                f"each super-resolution stage needs at least {max(MIN_HEAD_LAYERS, self.num_critical + 1)} "
                f"head layers, got {heads}."
            )
        if self.img_resolution % math.prod(ups):
            raise UserInputError(
                f"img_resolution {self.img_resolution} is not divisible by the product of "
                f"superres_up_factors {ups}."
            )
        if self.c_dim < 0 or self.embed_dim <= 0:
            raise UserInputError(
                f"c_dim must be >= 0 and embed_dim > 0, got {self.c_dim} and {self.embed_dim}."
            )
        if self.num_embeddings is not None and self.num_embeddings < self.c_dim:
            raise UserInputError(
                f"num_embeddings ({self.num_embeddings}) must be at least c_dim ({self.c_dim}): every class "
                "needs a row of the embedding table."
            )
        self._check_img_aspect()
        self.stem_config()  # validates the stem settings (and its non-square canvas)

    def _check_img_aspect(self) -> None:
        """A :class:`UserInputError` unless the stem (hence every stage) is a whole number of pixels per side."""
        check_img_aspect(self.img_aspect)
        if self.img_aspect is None or self.img_aspect[0] == self.img_aspect[1]:
            return
        aw, ah = self.img_aspect
        stem, longer = self.stem_resolution, max(aw, ah)
        if (stem * aw) % longer or (stem * ah) % longer:
            raise UserInputError(
                f"img_aspect {aw}:{ah} needs a {stem * aw / longer:g}x{stem * ah / longer:g} px StyleGAN-XL stem "
                f"(longer side {stem} px): the stem's shorter side must be a whole number of pixels. Use a ratio "
                f"such as 4:3, 3:4, 2:1 or 16:9 with a {stem} px stem, or prepare the data at such a ratio "
                "(styleforge dataset --resolution WxH)."
            )

    @property
    def stem_resolution(self) -> int:
        """Output resolution of the stem (before any super-resolution stage)."""
        return self.img_resolution // math.prod(self.superres_up_factors)

    def stem_config(self) -> StyleGAN3Config:
        """The synthesis settings of the stem as a StyleGAN3 config (mapping fields are not used from it)."""
        names = {f.name for f in dataclasses.fields(StyleGAN3Config)}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        values["img_resolution"] = self.stem_resolution
        return StyleGAN3Config(**values)


# ----------------------------------------------------------------------------------------------------------
# Mapping.


class StyleGANXLMapping(MappingNetwork):
    """Mapping network with a class embedding table and a per-class ``w_avg``.

    ``w = fc(concat(norm(z), norm(embed_proj(embed[argmax c]))))``; ``embed_proj`` maps the ``embed_dim``-wide
    embedding to ``z_dim`` features with a leaky ReLU. With ``c_dim == 0`` this is the plain StyleGAN3
    mapping.

    Args:
        z_dim, c_dim, w_dim, num_ws, num_layers, lr_multiplier, w_avg_beta: as in
            :class:`~styleforge.layers.mapping.MappingNetwork`.
        embed_dim: width of the embedding table.
        num_embeddings: rows of the embedding table (``None`` = ``c_dim``).
    """

    def __init__(
        self,
        z_dim: int,                          # Input latent (Z) dimensionality.
        c_dim: int,                          # Number of classes, 0 = unconditional.
        w_dim: int,                          # Intermediate latent (W) dimensionality.
        num_ws: int | None,                  # Number of w copies to output.
        num_layers: int = 2,                 # Number of mapping layers.
        lr_multiplier: float = 0.01,         # Learning-rate multiplier of the mapping layers.
        w_avg_beta: float = 0.998,           # Decay of the per-class w average.
        embed_dim: int = DEFAULT_EMBED_DIM,  # Width of the class embedding table.
        num_embeddings: int | None = None,   # Rows of the class embedding table, None = c_dim.
    ) -> None:
        # Read by _build_embedding, which the base constructor calls.
        self.class_embed_dim = embed_dim
        self.num_embeddings = c_dim if num_embeddings is None else num_embeddings
        super().__init__(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            num_ws=num_ws,
            num_layers=num_layers,
            embed_features=z_dim,
            lr_multiplier=lr_multiplier,
            w_avg_beta=w_avg_beta,
        )

    def _build_embedding(self) -> nn.Module | None:
        if self.c_dim == 0:
            return None
        self.embed_proj = EqualizedLinear(self.class_embed_dim, self.z_dim, activation="lrelu")
        return nn.Embedding(self.num_embeddings, self.class_embed_dim)

    def embed_labels(self, c: torch.Tensor) -> torch.Tensor:
        """``[N, c_dim]`` labels -> ``[N, z_dim]`` normalised class features (the class is ``argmax c``)."""
        return normalize_2nd_moment(self.embed_proj(self.embed(c.argmax(dim=1))))

    def w_avg_shape(self) -> list[int]:
        return [self.c_dim, self.w_dim] if self.c_dim > 0 else [self.w_dim]

    def update_w_avg(self, w: torch.Tensor, c: torch.Tensor | None) -> None:
        """Move each sample's class average towards it, one sample after the other (as the official code)."""
        if self.c_dim == 0:
            super().update_w_avg(w, c)
            return
        for sample, label in zip(w.detach(), c.argmax(dim=1), strict=True):
            self.w_avg[label].copy_(sample.lerp(self.w_avg[label], self.w_avg_beta))

    def w_avg_for(self, c: torch.Tensor | None) -> torch.Tensor:
        """``[N, w_dim]``: the average of each sample's class (``[w_dim]`` when unconditional)."""
        if self.c_dim == 0:
            return self.w_avg
        return self.w_avg[c.argmax(dim=1)]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, embed_dim={self.class_embed_dim}, num_embeddings={self.num_embeddings}"
        )


# ----------------------------------------------------------------------------------------------------------
# Synthesis.


def superres_layer_schedule(
    last_layer: SynthesisLayer,
    img_resolution: int,
    img_channels: int,
    head_layers: int,
    channel_base: float,
    channel_max: int,
    margin_size: int,
    last_stopband_rel: float,
) -> LayerSchedule:
    """Schedule of the ``head_layers + 1`` new layers of a super-resolution stage (the last one is ToRGB).

    Index 0 continues from ``last_layer`` (the last kept layer of the previous generator): its cutoff,
    stop-band ``f_c + f_h``, sampling rate and channel count. ``f_c`` and ``f_t`` then grow geometrically to
    ``f_c = img_resolution / 2`` and ``f_t = f_c * last_stopband_rel``, reached ``SUPERRES_SCHEDULE_CRITICAL``
    layers before ToRGB; sampling rates, half-widths, sizes and channels follow the StyleGAN3 rules.
    """
    first_cutoff = last_layer.out_cutoff
    first_stopband = last_layer.out_half_width + first_cutoff
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(head_layers + 1) / (head_layers - SUPERRES_SCHEDULE_CRITICAL), 1.0)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    sampling_rates[0] = last_layer.out_sampling_rate
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[0] = last_layer.out_channels
    channels[-1] = img_channels
    return LayerSchedule(cutoffs, stopbands, sampling_rates, half_widths, sizes, channels)


class StyleGANXLSynthesis(StyleGAN3Synthesis):
    """StyleGAN3 synthesis with the XL layer schedule, grown by the configured super-resolution stages.

    ``ws[:, 0]`` drives the Fourier input and ``ws[:, i + 1]`` layer ``i``; ``num_ws = len(layers) + 1``.
    ``self.schedule`` is the stem's schedule and ``self.stage_schedules`` those of the stages.
    """

    def __init__(self, config: StyleGANXLConfig) -> None:
        super().__init__(config.stem_config())
        #: official index k of ``L<k>_<size>_<channels>`` for each entry of ``self.layers``
        self.official_indices = list(range(len(self.layers)))
        self.stage_schedules: list[LayerSchedule] = []
        for head_layers, up_factor in zip(
            config.superres_head_layers, config.superres_up_factors, strict=True
        ):
            self._add_stage(config, head_layers, up_factor)

    def _add_stage(self, config: StyleGANXLConfig, head_layers: int, up_factor: int) -> None:
        """Drop the critically sampled layers (and ToRGB), then append ``head_layers + 1`` new layers."""
        keep = [layer for layer in self.layers if not layer.is_critically_sampled]
        kept_indices = self.official_indices[: len(keep)]
        first_new_index = len(keep) + 1  # official numbering (leaves a gap after the stem)
        resolution = self.img_resolution * up_factor
        sched = superres_layer_schedule(
            keep[-1],
            resolution,
            config.img_channels,
            head_layers,
            config.channel_base,
            config.channel_max,
            config.margin_size,
            config.last_stopband_rel,
        )
        sizes = layer_sizes(sched, resolution, config.img_aspect, config.margin_size)  # (W, H) of each map
        new = []
        for idx in range(head_layers + 1):
            prev = max(idx - 1, 0)
            new.append(
                SynthesisLayer(
                    w_dim=config.w_dim,
                    is_torgb=idx == head_layers,
                    is_critically_sampled=idx >= head_layers - config.num_critical,
                    use_fp16=bool(sched.sampling_rates[idx] * 2**config.num_fp16_res > resolution),
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
                    **HEAD_LAYER_KWARGS,
                )
            )
        self.layers = nn.ModuleList(keep + new)
        self.official_indices = kept_indices + [first_new_index + i for i in range(head_layers + 1)]
        self.stage_schedules.append(sched)
        self.img_resolution = resolution
        self.num_layers = len(self.layers) - 1
        self.num_ws = len(self.layers) + 1

    def official_layer_name(self, idx: int) -> str:
        """The official module name of layer ``idx``: ``L<k>_<out_size>_<out_channels>``."""
        layer = self.layers[idx]
        return f"L{self.official_indices[idx]}_{layer.out_size}_{layer.out_channels}"


# ----------------------------------------------------------------------------------------------------------
# Generator.


@register_network
class StyleGANXLGenerator(StyleGAN3Generator):
    """StyleGAN-XL generator ``G(z, c) = synthesis(mapping(z, c))``: the stem or a grown super-res network.

    Call conventions are those of StyleGAN3 (``G(z, c, truncation_psi, truncation_cutoff, noise_mode,
    update_emas, transform)``), with truncation towards the class's own ``w_avg``.
    """

    config_class = StyleGANXLConfig

    def _build_synthesis(self, config: StyleGANXLConfig) -> StyleGANXLSynthesis:
        return StyleGANXLSynthesis(config)

    def _build_mapping(self, config: StyleGANXLConfig) -> nn.Module:
        return StyleGANXLMapping(
            z_dim=config.z_dim,
            c_dim=config.c_dim,
            w_dim=config.w_dim,
            num_ws=self.num_ws,
            num_layers=config.mapping_layers,
            lr_multiplier=config.mapping_lr_multiplier,
            w_avg_beta=config.w_avg_beta,
            embed_dim=config.embed_dim,
            num_embeddings=config.num_embeddings,
        )

    @property
    def num_stages(self) -> int:
        """Number of super-resolution stages on top of the stem."""
        return len(self.config.superres_head_layers)

    def grow(self, head_layers: int = 7, up_factor: int = 2) -> StyleGANXLGenerator:
        """A new generator with one more super-resolution stage, carrying over this network's weights.

        The mapping network, the synthesis input and every non-critically-sampled layer keep their trained
        parameters and buffers; the new stage's ``head_layers + 1`` layers start from a fresh initialisation
        (the official ``SuperresGenerator`` built on a stem snapshot). A non-square network grows with the same
        ``img_aspect`` (16x12 -> 32x24 for ``up_factor=2``).

        Args:
            head_layers: new layers before the new ToRGB (7 in the official training).
            up_factor: resolution factor of the stage (2, 4, 8 or 16).
        """
        cfg = dataclasses.replace(
            self.config,
            img_resolution=self.img_resolution * up_factor,
            superres_head_layers=(*self.config.superres_head_layers, head_layers),
            superres_up_factors=(*self.config.superres_up_factors, up_factor),
        )
        grown = type(self)(cfg)
        kept = sum(1 for layer in self.synthesis.layers if not layer.is_critically_sampled)
        dropped = {f"synthesis.layers.{i}." for i in range(kept, len(self.synthesis.layers))}
        source = {k: v for k, v in self.state_dict().items() if not any(k.startswith(p) for p in dropped)}
        target = grown.state_dict()
        problems = [k for k, v in source.items() if k not in target or target[k].shape != v.shape]
        if problems:
            raise RuntimeError(
                f"grow(): stem tensors without a matching place in the grown network: {problems}"
            )
        with torch.no_grad():
            for k, v in source.items():
                target[k].copy_(v)
        return grown.to(next(self.parameters()).device)


# ----------------------------------------------------------------------------------------------------------
# Presets.

# The official XL stem: z 64, w 512, 10 layers, channel_base 32768, channel_max 512, ImageNet classes.
_STEM = dict(z_dim=64, c_dim=1000, w_dim=512, img_resolution=16, num_layers=10)
# Tiny variants for tests: 16 px stem, a few channels, 10 classes, 16-wide embedding table.
_TINY = dict(
    z_dim=16,
    c_dim=10,
    w_dim=32,
    img_resolution=16,
    channel_base=512,
    channel_max=32,
    num_layers=6,
    embed_dim=16,
)
_TINY_HEAD_LAYERS = 4


@register_preset("stylegan-xl-stem")
def stylegan_xl_stem() -> Preset:
    """The StyleGAN-XL stem generator (16 px, 1000 classes); no discriminator (it needs pretrained
    features)."""
    return Preset(
        "stylegan-xl-stem",
        StyleGANXLGenerator,
        StyleGANXLConfig(**_STEM),
        description="StyleGAN-XL 16 px stem",
    )


@register_preset("stylegan-xl-32")
def stylegan_xl_32() -> Preset:
    """The StyleGAN-XL stem grown once to 32 px (7 head layers, as in the official training)."""
    cfg = StyleGANXLConfig(
        **{**_STEM, "img_resolution": 32}, superres_head_layers=(7,), superres_up_factors=(2,)
    )
    return Preset(
        "stylegan-xl-32", StyleGANXLGenerator, cfg, description="StyleGAN-XL 16 px stem + 32 px stage"
    )


@register_preset("stylegan-xl-stem-tiny")
def stylegan_xl_stem_tiny() -> Preset:
    """A tiny StyleGAN-XL stem for tests (16 px, <= 32 channels, 10 classes)."""
    return Preset(
        "stylegan-xl-stem-tiny",
        StyleGANXLGenerator,
        StyleGANXLConfig(**_TINY),
        description="tiny StyleGAN-XL stem for tests",
    )


@register_preset("stylegan-xl-superres-tiny")
def stylegan_xl_superres_tiny() -> Preset:
    """The tiny stem plus one 2x super-resolution stage (32 px) for tests."""
    cfg = StyleGANXLConfig(
        **{**_TINY, "img_resolution": 32}, superres_head_layers=(_TINY_HEAD_LAYERS,), superres_up_factors=(2,)
    )
    return Preset(
        "stylegan-xl-superres-tiny",
        StyleGANXLGenerator,
        cfg,
        description="tiny StyleGAN-XL stem + one 2x stage for tests",
    )

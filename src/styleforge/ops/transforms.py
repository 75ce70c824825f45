"""2-D affine transforms of the StyleGAN3 input (translation and rotation of the generated image).

StyleGAN3's synthesis input samples Fourier features on a grid of continuous coordinates. A 3x3 homogeneous
matrix ``T`` (the ``transform`` of the synthesis input) maps those coordinates before sampling, so changing
``T`` moves the *content* of the image continuously, without resampling pixels. Coordinates are in units of
the image size: the visible image spans ``[-0.5, 0.5]`` in x and y, so a translation of ``0.25`` moves the
content by a quarter image.

Conventions (those of NVIDIA's ``gen_images.py``, which our reference outputs were produced with):

- the *user matrix* ``U`` for ``translate=(tx, ty)`` and ``rotate=a`` degrees is
  ``[[cos a, sin a, tx], [-sin a, cos a, ty], [0, 0, 1]]``;
- the matrix given to the network (the value copied into ``synthesis.input.transform``) is ``U^-1``.

:func:`transform_matrix` returns that network-side matrix; pass it as ``G(z, c, transform=M)`` or
``G.synthesis(ws, transform=M)``, or copy it into the buffer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["user_transform_matrix", "transform_matrix", "rotation_matrix", "translation_matrix"]

_DEGREES_PER_TURN = 360.0


def _check_translate(translate: Sequence[float]) -> tuple[float, float]:
    from styleforge.utils.errors import UserInputError

    try:
        tx, ty = (float(v) for v in translate)
    except (TypeError, ValueError) as e:
        raise UserInputError(
            f"translate must be two numbers (tx, ty) in units of the image size, got {translate!r}"
        ) from e
    if not (math.isfinite(tx) and math.isfinite(ty)):
        raise UserInputError(f"translate must be finite, got {translate!r}")
    return tx, ty


def user_transform_matrix(translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0) -> np.ndarray:
    """The user-facing 3x3 matrix ``U`` for a translation and a rotation (float64 numpy array).

    Args:
        translate: ``(tx, ty)`` in units of the image width/height (``0.5`` = half an image).
        rotate: rotation angle in degrees.

    Returns:
        ``[[cos a, sin a, tx], [-sin a, cos a, ty], [0, 0, 1]]`` with ``a = rotate`` in radians.
    """
    tx, ty = _check_translate(translate)
    angle = float(rotate) / _DEGREES_PER_TURN * 2.0 * math.pi
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    return np.array([[cos_a, sin_a, tx], [-sin_a, cos_a, ty], [0.0, 0.0, 1.0]], dtype=np.float64)


def transform_matrix(translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0) -> torch.Tensor:
    """The 3x3 input transform of a StyleGAN3 generator that translates by ``translate``, rotates ``rotate``.

    This is the inverse of :func:`user_transform_matrix` (computed in float64, returned as float32), i.e.
    exactly what the official generation script copies into ``synthesis.input.transform``.

    Args:
        translate: ``(tx, ty)`` in units of the image size.
        rotate: angle in degrees.

    Returns:
        float32 tensor of shape ``[3, 3]`` on the CPU.
    """
    return torch.from_numpy(np.linalg.inv(user_transform_matrix(translate, rotate))).to(torch.float32)


def rotation_matrix(angle: torch.Tensor | float) -> torch.Tensor:
    """Homogeneous 3x3 rotation ``[[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]]`` for ``angle`` in radians.

    Works on a scalar tensor (keeping its device and dtype, float32 for Python numbers) and is differentiable.
    """
    angle = torch.as_tensor(angle, dtype=torch.float32) if not torch.is_tensor(angle) else angle
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack(
        [torch.stack([c, s, zero]), torch.stack([-s, c, zero]), torch.stack([zero, zero, one])]
    )


def translation_matrix(tx: torch.Tensor | float, ty: torch.Tensor | float) -> torch.Tensor:
    """Homogeneous 3x3 translation ``[[1, 0, tx], [0, 1, ty], [0, 0, 1]]`` (float32 for Python numbers)."""
    tx = torch.as_tensor(tx, dtype=torch.float32) if not torch.is_tensor(tx) else tx
    ty = torch.as_tensor(ty, dtype=tx.dtype, device=tx.device) if not torch.is_tensor(ty) else ty
    zero, one = torch.zeros_like(tx), torch.ones_like(tx)
    return torch.stack(
        [torch.stack([one, zero, tx]), torch.stack([zero, one, ty]), torch.stack([zero, zero, one])]
    )

"""Small helpers shared by the analysis modules."""

from __future__ import annotations

import numpy as np
import torch

from styleforge.utils.images import to_uint8

__all__ = ["rgb_image"]


def rgb_image(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """One generated image ``[C, H, W]`` (float, [-1, 1]) -> uint8 ``[H, W, 3]`` (grey images repeated to RGB)."""
    x = to_uint8(torch.as_tensor(img).unsqueeze(0))[0]
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x

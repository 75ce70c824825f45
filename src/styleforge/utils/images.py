"""Image conversion, grids and atomic PNG writing."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import torch
from PIL import Image

from styleforge.utils.io import atomic_write_bytes

__all__ = ["to_uint8", "make_grid", "save_png"]


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """Generator output ``[N, C, H, W]`` in [-1, 1] -> uint8 ``[N, H, W, C]``.

    Uses ``(img * 127.5 + 128).clamp(0, 255)`` truncated to uint8, exactly as the official generation scripts, so the
    same network and seed give the same picture.
    """
    if img.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(img.shape)}")
    x = (img.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, cols: int | None = None, pad: int = 0, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images ``[N, H, W, C]`` into one ``[rows*H, cols*W, C]`` image (row-major; blanks filled)."""
    if images.ndim != 4:
        raise ValueError(f"expected images [N, H, W, C], got shape {images.shape}")
    n, h, w, c = images.shape
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), pad_value, dtype=images.dtype)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = images[i]
    return grid


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 ``[H, W, C]`` (C = 1, 3 or 4) or ``[H, W]`` image as PNG, atomically."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())

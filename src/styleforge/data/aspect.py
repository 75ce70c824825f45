"""Non-square image sizes: parse ``512x384``, crop or pad an image to a ``W:H`` aspect ratio, reduce a ratio.

A non-square dataset is ``W x H`` with ``W != H``; a network trained on it has ``img_resolution = max(W, H)``
and ``img_aspect = (W, H) / gcd(W, H)`` (see :func:`styleforge.models.base.aspect_image_size`).
"""

from __future__ import annotations

import math

from PIL import Image

from styleforge.utils.errors import UserInputError

__all__ = ["parse_size", "size_pair", "reduced_aspect", "crop_to_aspect", "pad_to_aspect", "fit_to_size"]


def parse_size(text: str | int) -> int | tuple[int, int]:
    """``"256"`` -> ``256``; ``"512x384"`` (W x H) -> ``(512, 384)``; ``"256x256"`` -> ``256``."""
    if isinstance(text, int):
        return text
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or any(v < 1 for v in values):
        raise UserInputError(
            f"--resolution must be a size in pixels such as 256 (square) or 512x384 (width x height), got {text!r}."
        )
    if len(values) == 1 or values[0] == values[1]:
        return values[0]
    return values[0], values[1]


def size_pair(resolution: int | tuple[int, int]) -> tuple[int, int]:
    """``(W, H)`` of a square side or a pair."""
    if isinstance(resolution, (tuple, list)):
        return int(resolution[0]), int(resolution[1])
    return int(resolution), int(resolution)


def reduced_aspect(width: int, height: int) -> tuple[int, int] | None:
    """``W:H`` in lowest terms (``(4, 3)`` for 512x384), ``None`` for a square."""
    if width == height:
        return None
    g = math.gcd(width, height)
    return width // g, height // g


def crop_to_aspect(img: Image.Image, width: int, height: int) -> Image.Image:
    """The largest centred region of ``img`` with the aspect ratio ``width:height`` (not resized)."""
    w, h = img.size
    if w * height > h * width:  # too wide: keep the full height
        cw, ch = max(1, round(h * width / height)), h
    else:
        cw, ch = w, max(1, round(w * height / width))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img if (cw, ch) == (w, h) else img.crop((left, top, left + cw, top + ch))


def pad_to_aspect(img: Image.Image, width: int, height: int, fill: int | tuple[int, ...]) -> Image.Image:
    """``img`` centred on the smallest canvas of aspect ratio ``width:height`` that holds it, filled with ``fill``."""
    w, h = img.size
    if w * height > h * width:  # too wide: pad the height
        cw, ch = w, max(h, round(w * height / width))
    else:
        cw, ch = max(w, round(h * width / height)), h
    if (cw, ch) == (w, h):
        return img
    canvas = Image.new(img.mode, (cw, ch), fill)
    canvas.paste(img, ((cw - w) // 2, (ch - h) // 2))
    return canvas


def fit_to_size(img: Image.Image, width: int, height: int, resample: int = Image.LANCZOS, *, pad: bool = False,
                fill: int | tuple[int, ...] = 0) -> Image.Image:
    """Crop (or with ``pad``: pad) ``img`` to the aspect ratio ``width:height``, then resize to ``width x height``."""
    if img.size == (width, height):
        return img
    img = pad_to_aspect(img, width, height, fill) if pad else crop_to_aspect(img, width, height)
    return img if img.size == (width, height) else img.resize((width, height), resample)

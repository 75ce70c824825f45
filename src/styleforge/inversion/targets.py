"""Reading projection targets: image files or a folder of them, centre-cropped and resized to the network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from styleforge.utils.errors import UserInputError

__all__ = ["load_target_image", "list_target_files", "load_targets", "target_size", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def load_target_image(path: str | os.PathLike, resolution: int | tuple[int, int], channels: int) -> torch.Tensor:
    """One image file -> ``[1, channels, resolution, resolution]`` in [-1, 1]: centre-cropped to a square,
    Lanczos-resized, converted to the network's channels (transparency flattened on white, grayscale expanded).
    ``resolution = (W, H)`` (a non-square network): centre-cropped to ``W:H`` and resized, ``[1, channels, H, W]``.

    Raises:
        UserInputError: the file is missing, empty or not an image.
    """
    from styleforge.data.dataset import center_crop_resize, convert_channels, decode_image

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"Target image {path} does not exist.")
    try:
        img = decode_image(path.read_bytes())
    except ValueError as e:
        raise UserInputError(f"Cannot read the target {path}: {e}. Use a PNG or JPEG image.") from None
    img = convert_channels(img, channels)
    if isinstance(resolution, int):
        img = center_crop_resize(img, resolution, Image.LANCZOS)
    else:
        from styleforge.data.aspect import fit_to_size

        img = fit_to_size(img, int(resolution[0]), int(resolution[1]), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None] / 127.5 - 1


def list_target_files(path: str | os.PathLike) -> list[Path]:
    """``[path]`` for a file; the image files (by suffix, sorted) of a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserInputError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
        return files
    if not path.exists():
        raise UserInputError(f"Target {path} does not exist.")
    return [path]


def load_targets(path: str | os.PathLike, resolution: int | tuple[int, int],
                 channels: int) -> tuple[list[Path], torch.Tensor]:
    """The files of :func:`list_target_files` and their images ``[N, channels, R, R]`` in [-1, 1]."""
    files = list_target_files(path)
    return files, torch.cat([load_target_image(f, resolution, channels) for f in files])


def target_size(G: torch.nn.Module) -> int | tuple[int, int]:
    """What :func:`load_targets` needs for ``G``: its side (square) or ``(W, H)`` (non-square)."""
    from styleforge.models.base import image_size

    width, height = image_size(G)
    return width if width == height else (width, height)

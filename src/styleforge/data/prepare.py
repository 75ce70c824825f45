"""The dataset tool: turn a folder or zip of images into a training-ready zip.

The output is the format the official dataset tool writes and :func:`styleforge.data.open_dataset` reads:
an uncompressed (``ZIP_STORED``) zip of PNGs named ``00000/img00000000.png`` (1000 per folder) plus a
``dataset.json`` ``{"labels": [[name, class], ...] | null, "class_names": [...]}``. Every image has the same
size (square, or ``W x H`` with ``--resolution 512x384``: cropped or padded to that aspect ratio) and channel
count. The zip is written to a temporary file and moved into place, so a crash never
leaves a half-written zip.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from styleforge.data.aspect import fit_to_size, size_pair
from styleforge.data.dataset import (
    DATASET_JSON,
    BadFile,
    _FolderSource,
    _natural_channels,
    _read_labels,
    _Source,
    _ZipSource,
    convert_channels,
    decode_image,
)
from styleforge.utils.errors import UserInputError
from styleforge.utils.io import atomic_write

__all__ = ["PrepareConfig", "PrepareResult", "prepare_dataset", "TRANSFORMS", "RESIZE_FILTERS"]

#: How a non-square source is made square.
TRANSFORMS = ("center-crop", "center-crop-wide", "pad")
#: Resampling filter used when the size changes.
RESIZE_FILTERS = {"box": Image.BOX, "lanczos": Image.LANCZOS}
#: Images per sub-folder inside the zip (as the official tool).
IMAGES_PER_FOLDER = 1000
#: Aspect ratio (width / height) of the crop made by ``center-crop-wide`` (cars, LSUN-style wide images).
WIDE_ASPECT = 2.0


@dataclass(frozen=True)
class PrepareConfig:
    """Options of :func:`prepare_dataset`.

    Attributes:
        resolution: output H = W in pixels, or ``(W, H)`` for non-square images (e.g. ``(512, 384)``).
        transform: ``center-crop`` (largest centred square, or region of the ``W:H`` aspect ratio),
            ``center-crop-wide`` (centred 2:1 crop, resized to ``resolution x resolution/2`` and placed on a
            black square; square output only), or ``pad`` (pad to a square, or to ``W:H``, with ``pad_value``
            and resize).
        resize_filter: ``box`` or ``lanczos``.
        max_images: keep only the first N images in sorted name order (``None``: all).
        channels: 1, 3 or 4 to convert every image; ``None`` keeps the source's majority channel count.
        skip_bad: leave out unreadable images with a warning instead of stopping with the list.
        pad_value: fill value of ``pad`` and ``center-crop-wide`` (0 = black, 255 = white).
    """

    resolution: int | tuple[int, int]
    transform: str = "center-crop"
    resize_filter: str = "lanczos"
    max_images: int | None = None
    channels: int | None = None
    skip_bad: bool = False
    pad_value: int = 0

    def __post_init__(self) -> None:
        if min(size_pair(self.resolution)) < 1:
            raise UserInputError(f"--resolution must be a positive number of pixels, got {self.resolution}.")
        if self.transform == "center-crop-wide" and not isinstance(self.resolution, int):
            raise UserInputError(
                "--transform center-crop-wide places a 2:1 crop on a square canvas; for non-square output "
                f"{self.resolution[0]}x{self.resolution[1]} use --transform center-crop (crop to the aspect ratio) "
                "or pad (pad to it)."
            )
        if self.transform not in TRANSFORMS:
            raise UserInputError(
                f"Unknown transform {self.transform!r}; choose one of {', '.join(TRANSFORMS)}."
            )
        if self.resize_filter not in RESIZE_FILTERS:
            raise UserInputError(
                f"Unknown resize filter {self.resize_filter!r}; choose one of {', '.join(RESIZE_FILTERS)}."
            )
        if self.channels not in (None, 1, 3, 4):
            raise UserInputError(f"--channels must be 1, 3 or 4, got {self.channels}.")
        if self.max_images is not None and self.max_images < 1:
            raise UserInputError(f"--max-images must be at least 1, got {self.max_images}.")


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare_dataset` wrote."""

    dest: Path
    num_images: int
    resolution: int | tuple[int, int]  # side of a square set, (W, H) of a non-square one
    channels: int
    num_classes: int
    skipped: tuple[BadFile, ...]


def _fill(channels: int, value: int) -> int | tuple[int, ...]:
    """A PIL fill colour for ``channels`` channels (opaque when there is alpha)."""
    return {1: value, 3: (value,) * 3, 4: (value, value, value, 255)}[channels]


def transform_image(img: Image.Image, cfg: PrepareConfig, channels: int) -> Image.Image:
    """Convert channels, make square (or ``W:H``) and resize one image, as :class:`PrepareConfig` says."""
    img = convert_channels(img, channels)
    if not isinstance(cfg.resolution, int):  # non-square: crop or pad to the aspect ratio, then resize
        width, height = size_pair(cfg.resolution)
        return fit_to_size(img, width, height, RESIZE_FILTERS[cfg.resize_filter], pad=cfg.transform == "pad",
                           fill=_fill(channels, cfg.pad_value))
    res, resample = cfg.resolution, RESIZE_FILTERS[cfg.resize_filter]
    w, h = img.size
    if cfg.transform == "center-crop":
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        return img if img.size == (res, res) else img.resize((res, res), resample)
    if cfg.transform == "pad":
        s = max(w, h)
        if (w, h) != (s, s):
            canvas = Image.new(img.mode, (s, s), _fill(channels, cfg.pad_value))
            canvas.paste(img, ((s - w) // 2, (s - h) // 2))
            img = canvas
        return img if img.size == (res, res) else img.resize((res, res), resample)
    # center-crop-wide: the largest centred WIDE_ASPECT:1 region, resized to res x res/2, centred on a square.
    cw, ch = (w, int(round(w / WIDE_ASPECT))) if w / h <= WIDE_ASPECT else (int(round(h * WIDE_ASPECT)), h)
    cw, ch = min(cw, w), min(ch, h)
    img = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    out_h = max(1, int(round(res / WIDE_ASPECT)))
    img = img.resize((res, out_h), resample)
    canvas = Image.new(img.mode, (res, res), _fill(channels, cfg.pad_value))
    canvas.paste(img, (0, (res - out_h) // 2))
    return canvas


def _open_source(path: Path) -> _Source:
    if path.is_dir():
        return _FolderSource(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return _ZipSource(path)
    raise UserInputError(f"--source {path} is neither a folder nor a zip archive of images.")


def prepare_dataset(source: str | os.PathLike, dest: str | os.PathLike, cfg: PrepareConfig) -> PrepareResult:
    """Write ``dest`` (a ``.zip``) from the images in ``source`` (folder or zip) at ``cfg.resolution``.

    Class labels are carried over when the source has them (``dataset.json`` or first-level sub-folders);
    images without a label make the labels ``null`` for the whole set (with a warning). Unreadable images stop
    the tool with the full list unless ``cfg.skip_bad``.
    """
    src_path, dest_path = Path(source).expanduser(), Path(dest).expanduser()
    if dest_path.suffix.lower() != ".zip":
        raise UserInputError(f"--dest must end in .zip, got {dest_path}.")
    if dest_path.resolve() == src_path.resolve():
        raise UserInputError("--dest must differ from --source.")
    src = _open_source(src_path)
    names = src.names()
    if not names:
        raise UserInputError(f"No images found in {src_path}.")
    if cfg.max_images is not None:
        names = names[: cfg.max_images]

    # First pass: decode everything (finds truncated files), note the channel counts; pixels are not kept.
    natural: dict[str, int] = {}
    bad: list[BadFile] = []
    for n in names:
        try:
            natural[n] = _natural_channels(decode_image(src.read(n)))
        except ValueError as e:
            bad.append(BadFile(n, str(e)))
    if bad and not cfg.skip_bad:
        lines = [f"{len(bad)} unusable file(s) in {src_path}:"] + [f"  - {b}" for b in bad[:20]]
        if len(bad) > 20:
            lines.append(f"  ... and {len(bad) - 20} more")
        lines.append("Remove them, or pass --skip-bad to leave them out.")
        raise UserInputError("\n".join(lines))
    if bad:
        warnings.warn(f"Skipping {len(bad)} unusable file(s): " + "; ".join(map(str, bad[:5])), stacklevel=2)
    if not natural:
        raise UserInputError(f"No usable images in {src_path}.")
    kept = sorted(natural)
    if cfg.channels is not None:
        channels = cfg.channels
    else:
        counts = np.bincount([natural[n] for n in kept], minlength=5)
        channels = int(np.argmax(counts))

    by_name, class_names = _read_labels(src, kept)
    labels: list[list] | None = None
    if by_name is not None:
        missing = [n for n in kept if n not in by_name]
        if missing:
            warnings.warn(f"{len(missing)} image(s) have no label (first {missing[0]}); writing no labels.",
                          stacklevel=2)
        else:
            labels = []

    with atomic_write(dest_path, "wb") as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for idx, n in enumerate(kept):
            arc = f"{idx // IMAGES_PER_FOLDER:05d}/img{idx:08d}.png"
            out = transform_image(decode_image(src.read(n)), cfg, channels)
            buf = io.BytesIO()
            out.save(buf, format="PNG", compress_level=6)
            zf.writestr(arc, buf.getvalue())
            if labels is not None:
                labels.append([arc, by_name[n]])
        meta: dict = {"labels": labels}
        if labels is not None and class_names:
            meta["class_names"] = class_names
        zf.writestr(DATASET_JSON, json.dumps(meta))

    num_classes = 0
    if labels:
        values = [v for _, v in labels]
        ints = [k for v in values for k in (v if isinstance(v, list) else [v])]
        num_classes = (max(ints) + 1) if ints and all(isinstance(k, int) for k in ints) else 0
    return PrepareResult(dest_path, len(kept), cfg.resolution, channels, num_classes, tuple(bad))

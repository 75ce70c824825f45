"""Image datasets for training and metrics: a folder, a zip or a built-in name, checked before use.

:func:`open_dataset` is the single entry point. Every image is decoded once when the dataset is opened, so
that a zero-byte file, a truncated PNG, a text file named ``.jpg`` or an image of the wrong size in a prepared
zip is reported *before* training starts, all at once, by name and with the reason. ``skip_bad=True`` leaves
such files out with a warning instead.

Layout rules
------------
- **Folder**: searched recursively for every file PIL can read (by extension). Labels come from a
  ``dataset.json`` at the root (``{"labels": [["sub/name.png", 3], ...]}``, the official tool's format)
  or, when there is none, from the name of the first-level sub-folder holding each image (sorted
  names -> class 0, 1, ...).
- **Zip**: the same, inside the archive (the format :func:`styleforge.data.prepare.prepare_dataset` and the
  official dataset tool write: uncompressed PNGs plus ``dataset.json``).
- **Built-in** ``"emoji"``: the Noto Color Emoji glyphs at 32 px shipped in ``styleforge/assets/emoji32.zip``.
  ``"digits"``: the 1,797 UCI handwritten digits (scikit-learn's copy, CC BY 4.0) at 32 px with their classes 0-9,
  in ``styleforge/assets/digits32.zip`` (labelled: use ``--cond``).

Images come out as uint8 ``[C, H, W]`` with C = 1 (grayscale), 3 (RGB) or 4 (RGBA), H = W = ``resolution``.
Without ``resolution`` all images must already have one square size (else the odd ones are reported); with it,
images of another size are centre-cropped to a square and resized with a Lanczos filter while loading.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from styleforge.utils.errors import UserInputError

__all__ = [
    "ImageDataset",
    "BadFile",
    "open_dataset",
    "IMAGE_EXTENSIONS",
    "BUILTIN_DATASETS",
    "DATASET_JSON",
    "decode_image",
]

#: File extensions treated as images (everything PIL can open that people use for datasets).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")

#: Name of the label file at the root of a folder or zip (official dataset-tool format).
DATASET_JSON = "dataset.json"

#: Built-in dataset name -> file name inside ``styleforge/assets``.
BUILTIN_DATASETS = {"emoji": "emoji32.zip", "digits": "digits32.zip"}

#: Decoded images are kept in memory when they take less than this many bytes in total.
MEMORY_CACHE_BYTES = 512 * 1024**2

#: How many bad files an error message lists before it says "and N more".
MAX_LISTED_BAD_FILES = 20

# PIL mode -> number of channels we keep for it.
_MODE_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "F": 1, "LA": 4, "RGB": 3, "RGBA": 4, "P": 3, "CMYK": 3,
                  "YCbCr": 3, "PA": 4, "RGBX": 3, "LAB": 3, "HSV": 3}
_CHANNELS_MODE = {1: "L", 3: "RGB", 4: "RGBA"}


@dataclass(frozen=True)
class BadFile:
    """An image that cannot be used, with the reason in words."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def _natural_channels(img: Image.Image) -> int:
    """Channels an image has in its own mode (palette images with transparency count as RGBA)."""
    if img.mode == "P" and "transparency" in img.info:
        return 4
    return _MODE_CHANNELS.get(img.mode, 3)


def convert_channels(img: Image.Image, channels: int) -> Image.Image:
    """Convert a PIL image to 1, 3 or 4 channels; dropped transparency is flattened on white."""
    if channels not in _CHANNELS_MODE:
        raise UserInputError(f"channels must be 1, 3 or 4, got {channels}.")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA", "RGBA") and channels != 4:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode in ("I", "I;16", "F"):
        # 16-bit / float grayscale: scale to 8 bit by the value range of the format.
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if arr.max() > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L")
    target = _CHANNELS_MODE[channels]
    return img if img.mode == target else img.convert(target)


def center_crop_resize(img: Image.Image, resolution: int, resample: int = Image.LANCZOS) -> Image.Image:
    """Centre-crop ``img`` to a square and resize it to ``resolution`` x ``resolution``."""
    w, h = img.size
    if (w, h) == (resolution, resolution):
        return img
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    return img.resize((resolution, resolution), resample)


def decode_image(data: bytes) -> Image.Image:
    """Decode and fully load image bytes; ``ValueError`` with the reason when they are not a usable image."""
    if len(data) == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ValueError("not an image file PIL can read") from None
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"truncated or corrupt image data ({e})") from None
    return img


class _Source:
    """Where the raw bytes come from: a folder or a zip archive."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError


class _FolderSource(_Source):
    def names(self) -> list[str]:
        out = []
        for root, dirs, files in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in files:
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                    out.append(Path(root, f).relative_to(self.path).as_posix())
        return sorted(out)

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()


class _ZipSource(_Source):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._zip: zipfile.ZipFile | None = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise UserInputError(f"{path} is not a valid zip archive (incomplete?); recreate it.") from None
        self._members = set(self._zip.namelist())
        self._pid = os.getpid()

    def _archive(self) -> zipfile.ZipFile:
        # A ZipFile handle must not be shared across fork(); reopen in a child process.
        if self._zip is None or self._pid != os.getpid():
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip

    def names(self) -> list[str]:
        return sorted(n for n in self._members
                      if n.lower().endswith(IMAGE_EXTENSIONS) and not n.endswith("/")
                      and not Path(n).name.startswith(".") and not n.startswith("__MACOSX/"))

    def read(self, name: str) -> bytes:
        return self._archive().read(name)

    def exists(self, name: str) -> bool:
        return name in self._members

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zip"] = None
        return state


def _read_labels(source: _Source, names: Sequence[str]) -> tuple[dict[str, object] | None, list[str]]:
    """Labels per file name from ``dataset.json``, else from first-level sub-folder names.

    Returns ``(labels by name or None, class names)``.
    """
    if source.exists(DATASET_JSON):
        try:
            meta = json.loads(source.read(DATASET_JSON).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserInputError(f"{source.path}/{DATASET_JSON} is not valid JSON ({e}); fix it.") from None
        labels = meta.get("labels") if isinstance(meta, dict) else None
        class_names = list(meta.get("class_names") or []) if isinstance(meta, dict) else []
        if labels is None:
            return None, class_names
        if not isinstance(labels, list) or not all(isinstance(e, list) and len(e) == 2 for e in labels):
            raise UserInputError(
                f"{source.path}/{DATASET_JSON}: 'labels' must be a list of [file name, label] pairs."
            )
        return {str(n).replace("\\", "/"): v for n, v in labels}, class_names
    folders = sorted({n.split("/", 1)[0] for n in names if "/" in n})
    if not folders:
        return None, []
    index = {f: i for i, f in enumerate(folders)}
    return {n: index[n.split("/", 1)[0]] for n in names if "/" in n}, folders


class ImageDataset:
    """Decoded, checked images with optional class labels and x-flip mirroring.

    ``ds[i]`` returns ``(image, label)``: image uint8 ``[C, H, W]`` (values 0..255), label float32
    ``[label_dim]`` (one-hot for integer class labels; ``[0]`` when labels are off). With ``xflip`` the
    dataset is twice as long and the second half holds the mirrored images (official ``--mirror``).

    Attributes:
        name: dataset name (file or folder stem, or the built-in name).
        resolution: H = W of every image.
        num_channels: C.
        label_dim: length of the label vector (0 without labels).
        has_labels: ``label_dim > 0``.
        class_names: names of the classes when known (sub-folders or ``dataset.json``).
        bad_files: the files left out with ``skip_bad=True``.
    """

    def __init__(
        self,
        source: _Source,
        name: str,
        *,
        resolution: int | None = None,
        use_labels: bool = False,
        xflip: bool = False,
        skip_bad: bool = False,
        strict_format: bool = False,
        max_images: int | None = None,
    ) -> None:
        self.name = name
        self._source = source
        names = source.names()
        if not names:
            raise UserInputError(
                f"No images found in {source.path}; expected files ending in {', '.join(IMAGE_EXTENSIONS)}."
            )
        if max_images is not None:
            names = names[:max_images]

        # Decode every file once (that is what finds truncated data). Only the size and channel count are kept,
        # plus the decoded pixels while they fit in MEMORY_CACHE_BYTES (then they become the in-memory cache).
        info: dict[str, tuple[tuple[int, int], int]] = {}
        pixels: dict[str, Image.Image] | None = {}
        pixel_bytes = 0
        bad: list[BadFile] = []
        for n in names:
            try:
                img = decode_image(source.read(n))
            except ValueError as e:
                bad.append(BadFile(n, str(e)))
                continue
            info[n] = (img.size, _natural_channels(img))
            if pixels is not None:
                pixel_bytes += img.size[0] * img.size[1] * info[n][1]
                if pixel_bytes <= MEMORY_CACHE_BYTES:
                    pixels[n] = img
                else:
                    pixels = None

        if not info:
            raise UserInputError(self._bad_message(source.path, bad, "No usable image"))

        # The dataset's shape: given resolution, else the most common square size; channel count by majority.
        sizes = Counter(size for size, _ in info.values())
        if resolution is None:
            (w, h), _ = sizes.most_common(1)[0]
            if w != h:
                raise UserInputError(
                    f"The images in {source.path} are {w}x{h}, not square. Pass a resolution (--resolution) "
                    "to centre-crop them while loading, or prepare a dataset with `styleforge dataset`."
                )
            resolution = w
        if resolution < 1:
            raise UserInputError(f"resolution must be positive, got {resolution}.")
        channels = Counter(c for _, c in info.values()).most_common(1)[0][0]

        # A prepared zip holds one size and one channel count; others are errors. A folder is converted.
        majority_size = sizes.most_common(1)[0][0]
        keep: list[str] = []
        for n, (size, chans) in info.items():
            if strict_format and majority_size == (resolution, resolution) and size != majority_size:
                bad.append(BadFile(n, f"size {size[0]}x{size[1]}, expected {resolution}x{resolution}"))
                continue
            if strict_format and chans != channels:
                bad.append(BadFile(n, f"{chans} channels, expected {channels}"))
                continue
            keep.append(n)

        if bad:
            bad.sort(key=lambda b: b.name)
            if not skip_bad:
                raise UserInputError(self._bad_message(source.path, bad, f"{len(bad)} unusable file(s)"))
            msg = self._bad_message(source.path, bad, f"Skipping {len(bad)} unusable file(s)")
            warnings.warn(msg, stacklevel=3)
        self.bad_files = tuple(bad)

        self.resolution = int(resolution)
        self.num_channels = int(channels)
        self._names = sorted(keep)

        # Labels.
        self.class_names: list[str] = []
        self._labels = np.zeros((len(self._names), 0), dtype=np.float32)
        if use_labels:
            self._labels, self.class_names = self._make_labels(source, self._names)
        self.label_dim = int(self._labels.shape[1])
        self.has_labels = self.label_dim > 0

        # Keep the images in memory when they are small enough (decoded above already when they fitted).
        self._cache: list[np.ndarray] | None = None
        total = len(self._names) * channels * self.resolution**2
        if total <= MEMORY_CACHE_BYTES:
            self._cache = [self._to_array(pixels[n] if pixels is not None else
                                          decode_image(source.read(n))) for n in self._names]
        del pixels
        self._xflip = bool(xflip)

    # -- construction helpers --

    @staticmethod
    def _bad_message(path: Path, bad: Sequence[BadFile], head: str) -> str:
        lines = [f"{head} in {path}:"]
        lines += [f"  - {b}" for b in bad[:MAX_LISTED_BAD_FILES]]
        if len(bad) > MAX_LISTED_BAD_FILES:
            lines.append(f"  ... and {len(bad) - MAX_LISTED_BAD_FILES} more")
        lines.append("Remove or replace these files, or pass skip_bad=True (--skip-bad) to leave them out.")
        return "\n".join(lines)

    @staticmethod
    def _make_labels(source: _Source, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        by_name, class_names = _read_labels(source, names)
        if by_name is None:
            raise UserInputError(
                f"{source.path} has no labels: add a {DATASET_JSON} with a 'labels' list, put each class in "
                "its own sub-folder, or train without --cond."
            )
        missing = [n for n in names if n not in by_name]
        if missing:
            raise UserInputError(
                f"{len(missing)} image(s) in {source.path} have no label (first: {missing[0]}); every image "
                f"needs one in {DATASET_JSON} or must sit in a class sub-folder."
            )
        raw = [by_name[n] for n in names]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            ints = np.asarray(raw, dtype=np.int64)
            if ints.min() < 0:
                raise UserInputError(f"Class labels must be >= 0; found {int(ints.min())} in {source.path}.")
            onehot = np.zeros((len(ints), int(ints.max()) + 1), dtype=np.float32)
            onehot[np.arange(len(ints)), ints] = 1
            return onehot, class_names
        try:
            vec = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError):
            raise UserInputError(
                f"Labels in {source.path} must all be integers or all be equal-length number lists."
            ) from None
        return vec.reshape(len(names), -1), class_names

    def _to_array(self, img: Image.Image) -> np.ndarray:
        img = convert_channels(img, self.num_channels)
        img = center_crop_resize(img, self.resolution)
        arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    # -- access --

    @property
    def num_images(self) -> int:
        """Number of distinct images (without the mirrored copies)."""
        return len(self._names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return (self.num_channels, self.resolution, self.resolution)

    @property
    def names(self) -> list[str]:
        """File names of the images, in dataset order."""
        return list(self._names)

    def __len__(self) -> int:
        return self.num_images * (2 if self._xflip else 1)

    def unmirrored(self) -> ImageDataset:
        """The same images without the x-flipped copies (what metrics compare against); shares the decoded data."""
        if not self._xflip:
            return self
        view = copy.copy(self)
        view._xflip = False
        return view

    def raw_image(self, i: int) -> np.ndarray:
        """Image ``i`` (``0 <= i < num_images``) as uint8 ``[C, H, W]``, not mirrored."""
        if self._cache is not None:
            return self._cache[i]
        return self._to_array(decode_image(self._source.read(self._names[i])))

    def get_label(self, i: int) -> np.ndarray:
        """Label of item ``i`` as float32 ``[label_dim]``."""
        return self._labels[i % self.num_images].copy()

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        i %= len(self)
        img = self.raw_image(i % self.num_images)
        if i >= self.num_images:
            img = img[:, :, ::-1]
        return np.ascontiguousarray(img), self.get_label(i)

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, images={self.num_images}, resolution={self.resolution}, "
                f"channels={self.num_channels}, label_dim={self.label_dim}, xflip={self._xflip})")


def _assets_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "assets"


#: how to rebuild each built-in dataset's zip
BUILTIN_REBUILD = {"emoji": "build_emoji_dataset.py (needs fonts-noto-color-emoji and fonttools)",
                   "digits": "build_digits_dataset.py (needs scikit-learn)"}


def builtin_dataset_path(name: str) -> Path:
    """Path of the zip of a built-in dataset (``"emoji"``)."""
    if name not in BUILTIN_DATASETS:
        raise UserInputError(f"Unknown built-in dataset {name!r}; available: {', '.join(BUILTIN_DATASETS)}.")
    path = _assets_dir() / BUILTIN_DATASETS[name]
    if not path.is_file():
        raise UserInputError(
            f"The built-in dataset {name!r} is missing from this installation ({path}); rebuild it with "
            f"`python scripts/{BUILTIN_REBUILD[name]}`."
        )
    return path


def open_dataset(
    spec: str | os.PathLike,
    *,
    resolution: int | None = None,
    use_labels: bool = False,
    xflip: bool = False,
    skip_bad: bool = False,
    max_images: int | None = None,
) -> ImageDataset:
    """Open a folder, a zip or a built-in dataset, decoding and checking every image.

    Args:
        spec: a folder of images (searched recursively), a ``.zip`` of images, or a built-in name
            (``"emoji"``).
        resolution: output size H = W. ``None``: the images' own (single, square) size, and in a zip every
            image must have it. Given: images of another size are centre-cropped and resized while loading.
        use_labels: return class labels (one-hot ``[label_dim]``); needs ``dataset.json`` or class
            sub-folders.
        xflip: append the horizontally mirrored copy of every image (dataset length doubles).
        skip_bad: leave out unusable files with a warning instead of raising :class:`UserInputError`.
        max_images: use only the first N images (in sorted file-name order).

    Raises:
        UserInputError: the path does not exist, holds no images, or holds unusable files (each listed with
            the reason: empty, not an image, truncated, wrong size, channel count) and not ``skip_bad``.
    """
    spec_str = os.fspath(spec)
    path = Path(spec_str).expanduser()
    if spec_str in BUILTIN_DATASETS and not path.exists():
        return ImageDataset(_ZipSource(builtin_dataset_path(spec_str)), spec_str, resolution=resolution,
                            use_labels=use_labels, xflip=xflip, skip_bad=skip_bad, strict_format=True,
                            max_images=max_images)
    if path.is_dir():
        return ImageDataset(_FolderSource(path), path.name, resolution=resolution, use_labels=use_labels,
                            xflip=xflip, skip_bad=skip_bad, strict_format=False, max_images=max_images)
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise UserInputError(f"{path} is neither a folder nor a zip archive; give a folder or a .zip.")
        return ImageDataset(_ZipSource(path), path.stem, resolution=resolution, use_labels=use_labels,
                            xflip=xflip, skip_bad=skip_bad, strict_format=True, max_images=max_images)
    raise UserInputError(
        f"Dataset {spec_str!r} not found: give an existing folder, a .zip file, or a built-in name "
        f"({', '.join(BUILTIN_DATASETS)})."
    )

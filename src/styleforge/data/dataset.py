"""Image datasets for training and metrics: a folder, a zip or a built-in name, checked before use.

:func:`open_dataset` is the single entry point. Every image is checked (decoded once, in parallel worker
processes, the verdicts cached: :mod:`styleforge.data.check`) when the dataset is first opened, so that a
zero-byte file, a truncated PNG, a text file named ``.jpg`` or an image of the wrong size in a prepared zip is
reported *before* training starts, all at once, by name and with the reason. ``skip_bad=True`` leaves such files
out with a warning instead. Opening again reads the cached verdicts and decodes nothing; pixels are decoded when
an item is read (small sets are then kept in memory shared by the loader's workers: :mod:`styleforge.data.memory`).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from styleforge.data.memory import SharedImageCache
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
#: PIL modes :func:`convert_channels` converts (LAB, for one, PIL cannot convert to RGB without a colour profile).
_DECODABLE_MODES = frozenset(_MODE_CHANNELS) - {"LAB"} | {"La", "RGBa", "I;16B", "I;16L", "I;16N"}


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
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
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
    """Decode and fully load image bytes; ``ValueError`` with the reason when they are not a usable image.

    An image whose header declares more than :data:`PIL.Image.MAX_IMAGE_PIXELS` pixels (PIL's decompression-bomb
    limit, about 89 megapixels unless changed) is refused from its header, before its pixels are allocated. Any
    failure of a decoder on damaged data (PIL raises many exception types for those) is reported as corrupt data.
    """
    if len(data) == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with a clearer message
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ValueError("not an image file PIL can read") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"declares too many pixels ({e})") from None
    except Exception as e:  # noqa: BLE001  (a damaged header makes PIL's parsers raise anything)
        raise ValueError(f"corrupt image header ({type(e).__name__}: {e})") from None
    limit = Image.MAX_IMAGE_PIXELS
    w, h = img.size
    if limit is not None and w * h > limit:
        raise ValueError(f"declares {w}x{h} pixels, more than the {limit:,} allowed (a decompression bomb?); "
                         "refused before decoding. Raise PIL.Image.MAX_IMAGE_PIXELS if the image is genuine.")
    if w < 1 or h < 1:
        raise ValueError(f"declares an empty size ({w}x{h})")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"truncated or corrupt image data ({e})") from None
    except Exception as e:  # noqa: BLE001  (decoders raise struct.error, IndexError, ... on damaged data)
        raise ValueError(f"corrupt image data ({type(e).__name__}: {e})") from None
    if img.mode not in _DECODABLE_MODES:
        raise ValueError(f"colour mode {img.mode} is not supported; save the image as RGB, RGBA or grayscale")
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

    def stamps(self, names: Sequence[str]) -> list[list[int]]:
        """Per file, what changes when its content does (read without decoding; keys the check cache)."""
        raise NotImplementedError

    def archive_stamp(self) -> list[int] | None:
        """``[size, mtime_ns]`` of a zip archive (``None`` for a folder)."""
        return None


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

    def stamps(self, names: Sequence[str]) -> list[list[int]]:
        out = []
        for n in names:
            try:
                st = os.stat(self.path / n)
                out.append([st.st_size, st.st_mtime_ns])
            except OSError:
                out.append([-1, -1])
        return out


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
                      and not n.rsplit("/", 1)[-1].startswith(".") and not n.startswith("__MACOSX/"))

    def read(self, name: str) -> bytes:
        return self._archive().read(name)

    def exists(self, name: str) -> bool:
        return name in self._members

    def stamps(self, names: Sequence[str]) -> list[list[int]]:
        infos = self._archive()
        return [[infos.getinfo(n).file_size, infos.getinfo(n).CRC] for n in names]

    def archive_stamp(self) -> list[int] | None:
        st = os.stat(self.path)
        return [st.st_size, st.st_mtime_ns]

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
    ``[label_dim]`` (one-hot for integer class labels, multi-hot for lists of classes, the values for continuous
    attributes: :mod:`styleforge.data.labels`; ``[0]`` when labels are off). With ``xflip`` the
    dataset is twice as long and the second half holds the mirrored images (official ``--mirror``).

    Attributes:
        name: dataset name (file or folder stem, or the built-in name).
        resolution: H = W of every image; for a non-square set the longer side.
        width, height: W and H of every image (equal to ``resolution`` for a square set).
        num_channels: C.
        label_dim: length of the label vector (0 without labels).
        label_encoding: ``class``, ``multi-label`` or ``continuous`` (``None`` without labels).
        has_labels: ``label_dim > 0``.
        class_names: names of the classes when known (sub-folders or ``dataset.json``).
        bad_files: the files left out with ``skip_bad=True``.
    """

    def __init__(
        self,
        source: _Source,
        name: str,
        *,
        resolution: int | tuple[int, int] | None = None,
        use_labels: bool | str = False,
        xflip: bool = False,
        skip_bad: bool = False,
        strict_format: bool = False,
        max_images: int | None = None,
        check_workers: int | None = None,
        check_cache: bool = True,
        log: Callable[[str], None] | None = None,
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

        # Every file is decoded once (that is what finds truncated data), in worker processes, and the verdicts
        # (size and channel count, or the reason) are cached: see styleforge.data.check.
        info, bad = _checked_info(source, names, check_workers, check_cache, log)

        if not info:
            raise UserInputError(self._bad_message(source.path, bad, "No usable image"))

        # The dataset's shape: given resolution, else the most common square size; channel count by majority.
        sizes = Counter(size for size, _ in info.values())
        width, height = _dataset_size(resolution, sizes.most_common(1)[0][0], source.path, strict_format)
        resolution = max(width, height)
        channels = Counter(c for _, c in info.values()).most_common(1)[0][0]

        # A prepared zip holds one size and one channel count; others are errors. A folder is converted.
        majority_size = sizes.most_common(1)[0][0]
        keep: list[str] = []
        for n, (size, chans) in info.items():
            if strict_format and majority_size == (width, height) and size != majority_size:
                bad.append(BadFile(n, f"size {size[0]}x{size[1]}, expected {width}x{height}"))
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

        self.resolution = int(resolution)  # the longer side of a non-square set
        self.width, self.height = int(width), int(height)
        self.num_channels = int(channels)
        self._names = sorted(keep)

        # Labels.
        self.class_names: list[str] = []
        self._labels = np.zeros((len(self._names), 0), dtype=np.float32)
        self.label_encoding: str | None = None
        if use_labels:
            encoding = use_labels if isinstance(use_labels, str) else "auto"
            self._labels, self.class_names, self.label_encoding = self._make_labels(source, self._names, encoding)
        self.label_dim = int(self._labels.shape[1])
        self.has_labels = self.label_dim > 0

        # Small sets are kept decoded in memory shared with the loader's workers, filled as images are first read.
        self._cache: SharedImageCache | None = None
        total = len(self._names) * channels * self.width * self.height
        if total <= MEMORY_CACHE_BYTES:
            self._cache = SharedImageCache(len(self._names), self.image_shape)
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
    def _make_labels(source: _Source, names: Sequence[str], encoding: str = "auto",
                     ) -> tuple[np.ndarray, list[str], str]:
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
        from styleforge.data.labels import encode_labels

        where = f"{source.path}/{DATASET_JSON}" if source.exists(DATASET_JSON) else str(source.path)
        labels, encoding = encode_labels([by_name[n] for n in names], names, where, encoding)
        return labels, class_names, encoding

    def _to_array(self, img: Image.Image) -> np.ndarray:
        img = convert_channels(img, self.num_channels)
        if self.width == self.height:
            img = center_crop_resize(img, self.resolution)
        else:
            from styleforge.data.aspect import fit_to_size

            img = fit_to_size(img, self.width, self.height)
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
        return (self.num_channels, self.height, self.width)

    @property
    def img_aspect(self) -> tuple[int, int] | None:
        """``W:H`` in lowest terms for a non-square set (``(4, 3)`` for 512x384), ``None`` for a square one."""
        from styleforge.data.aspect import reduced_aspect

        return reduced_aspect(self.width, self.height)

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
        hit = self._cache.get(i) if self._cache is not None else None
        if hit is not None:
            return hit
        arr = self._to_array(decode_image(self._source.read(self._names[i])))
        if self._cache is not None:
            self._cache.put(i, arr)
        return arr

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


def _dataset_size(resolution: int | tuple[int, int] | None, majority: tuple[int, int], path: Path,
                  prepared: bool) -> tuple[int, int]:
    """``(W, H)`` of a dataset: the requested size (an int = square, or ``(W, H)``), else the images' most common
    size. A non-square majority size is taken as it is from a prepared zip (``styleforge dataset --resolution
    512x384``); a folder of non-square images needs an explicit size."""
    if resolution is None:
        w, h = majority
        if w != h and not prepared:
            raise UserInputError(
                f"The images in {path} are {w}x{h}, not square. Pass a resolution (--resolution) to centre-crop "
                f"them while loading (e.g. {max(w, h)}), or prepare a dataset with `styleforge dataset "
                "--resolution WxH` to keep an aspect ratio."
            )
        return w, h
    from styleforge.data.aspect import size_pair

    w, h = size_pair(resolution)
    if w < 1 or h < 1:
        raise UserInputError(f"resolution must be positive, got {resolution}.")
    return w, h


def _checked_info(source: _Source, names: Sequence[str], workers: int | None, cache: bool,
                  log: Callable[[str], None] | None) -> tuple[dict[str, tuple[tuple[int, int], int]], list[BadFile]]:
    """``({name: ((w, h), channels)} of the usable files, [bad files])`` from the (cached) check of every image."""
    from styleforge.data.check import check_images

    info: dict[str, tuple[tuple[int, int], int]] = {}
    bad: list[BadFile] = []
    for n, verdict in check_images(source, names, workers=workers, cache=cache, log=log).items():
        if isinstance(verdict, str):
            bad.append(BadFile(n, verdict))
        else:
            info[n] = ((int(verdict[0]), int(verdict[1])), int(verdict[2]))
    return info, bad


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
    resolution: int | tuple[int, int] | None = None,
    use_labels: bool | str = False,
    xflip: bool = False,
    skip_bad: bool = False,
    max_images: int | None = None,
    check_workers: int | None = None,
    check_cache: bool = True,
    log: Callable[[str], None] | None = None,
) -> ImageDataset:
    """Open a folder, a zip or a built-in dataset, checking every image (once: the verdicts are cached).

    Args:
        spec: a folder of images (searched recursively), a ``.zip`` of images, or a built-in name
            (``"emoji"``).
        resolution: output size H = W. ``None``: the images' own (single, square) size, and in a zip every
            image must have it. Given: images of another size are centre-cropped and resized while loading.
            ``(W, H)``: centre-cropped to that aspect ratio and resized; a prepared non-square zip is read at
            its own ``W x H`` when ``resolution`` is ``None``.
        use_labels: return class labels (one-hot ``[label_dim]``), or with an encoding name (``auto``,
            ``class``, ``multi-label``, ``continuous``: :mod:`styleforge.data.labels`) those labels; needs
            ``dataset.json`` or class sub-folders.
        xflip: append the horizontally mirrored copy of every image (dataset length doubles).
        skip_bad: leave out unusable files with a warning instead of raising :class:`UserInputError`.
        max_images: use only the first N images (in sorted file-name order).
        check_workers: processes that decode the files not checked before (``None``: one per core); see
            :func:`styleforge.data.check.check_images`.
        check_cache: reuse and store the verdicts in ``cache_dir("datasets")`` (keyed by the path, the
            archive's size and mtime, each member's size and CRC / each file's size and mtime).
        log: receives a line when images are decoded for the check.

    Opening decodes nothing that was checked before: a 70k-image zip opens in well under a second once its
    verdicts are cached; pixels are decoded when an item is read.

    Raises:
        UserInputError: the path does not exist, holds no images, or holds unusable files (each listed with
            the reason: empty, not an image, truncated, wrong size, channel count) and not ``skip_bad``.
    """
    spec_str = os.fspath(spec)
    check = {"check_workers": check_workers, "check_cache": check_cache, "log": log}
    path = Path(spec_str).expanduser()
    if spec_str in BUILTIN_DATASETS and not path.exists():
        return ImageDataset(_ZipSource(builtin_dataset_path(spec_str)), spec_str, resolution=resolution,
                            use_labels=use_labels, xflip=xflip, skip_bad=skip_bad, strict_format=True,
                            max_images=max_images, **check)
    if path.is_dir():
        return ImageDataset(_FolderSource(path), path.name, resolution=resolution, use_labels=use_labels,
                            xflip=xflip, skip_bad=skip_bad, strict_format=False, max_images=max_images, **check)
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise UserInputError(f"{path} is neither a folder nor a zip archive; give a folder or a .zip.")
        return ImageDataset(_ZipSource(path), path.stem, resolution=resolution, use_labels=use_labels,
                            xflip=xflip, skip_bad=skip_bad, strict_format=True, max_images=max_images, **check)
    raise UserInputError(
        f"Dataset {spec_str!r} not found: give an existing folder, a .zip file, or a built-in name "
        f"({', '.join(BUILTIN_DATASETS)})."
    )

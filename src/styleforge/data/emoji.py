"""The built-in ``emoji`` dataset: the colour glyphs of the Noto Color Emoji font, flattened on white.

Noto Color Emoji (https://github.com/googlefonts/noto-emoji) stores each glyph as a PNG bitmap (136 x 128
px) in its ``CBDT`` table. :func:`build_emoji_zip` reads those bitmaps with fontTools (an optional
dependency: ``pip install styleforge[emoji]``), composites them on a white background, pads them to a square
and resizes them, then writes the usual dataset zip. The images are under the Apache License 2.0 (see
``styleforge/assets/emoji32_LICENSE.txt``). The package ships the 32 px zip; ``open_dataset("emoji")`` reads
it.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

from styleforge.data.dataset import DATASET_JSON, decode_image
from styleforge.data.prepare import IMAGES_PER_FOLDER, PrepareConfig, transform_image
from styleforge.utils.errors import UserInputError
from styleforge.utils.io import atomic_write

__all__ = ["DEFAULT_FONT_PATHS", "find_emoji_font", "iter_emoji_bitmaps", "build_emoji_zip"]

#: Where Debian/Ubuntu (package fonts-noto-color-emoji), Fedora and macOS Homebrew put the font.
DEFAULT_FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-color-emoji/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/opt/homebrew/share/fonts/NotoColorEmoji.ttf",
)
#: White, the background the glyphs are flattened on.
BACKGROUND = 255


def find_emoji_font(explicit: str | os.PathLike | None = None) -> Path:
    """The NotoColorEmoji.ttf to read: ``explicit`` or the first of :data:`DEFAULT_FONT_PATHS` that exists."""
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise UserInputError(f"Font file {p} does not exist.")
        return p
    for cand in DEFAULT_FONT_PATHS:
        if Path(cand).is_file():
            return Path(cand)
    raise UserInputError(
        "NotoColorEmoji.ttf not found in " + ", ".join(DEFAULT_FONT_PATHS)
        + ". Install it (Debian/Ubuntu: `apt-get install fonts-noto-color-emoji`) or pass --font PATH."
    )


def iter_emoji_bitmaps(font_path: str | os.PathLike) -> list[tuple[str, bytes]]:
    """``(glyph name, PNG bytes)`` of every colour bitmap in the font's largest strike, by glyph name."""
    try:
        from fontTools.ttLib import TTFont
    except ImportError:
        raise UserInputError("Reading the emoji font needs fontTools: pip install fonttools") from None
    font = TTFont(str(font_path), lazy=True)
    if "CBDT" not in font:
        raise UserInputError(f"{font_path} has no CBDT colour-bitmap table; use Noto Color Emoji (CBDT).")
    strikes = font["CBDT"].strikeData
    strike = max(strikes, key=len)
    out = []
    for name, glyph in strike.items():
        if hasattr(glyph, "decompile") and getattr(glyph, "data", None) is not None:
            glyph.decompile()
        data = getattr(glyph, "imageData", None)
        if data:  # formats 17/18/19 hold PNG data
            out.append((name, bytes(data)))
    return sorted(out)


def build_emoji_zip(dest: str | os.PathLike, resolution: int = 32, font: str | os.PathLike | None = None,
                    max_images: int | None = None) -> int:
    """Render every colour glyph at ``resolution`` px on white and write the dataset zip ``dest``.

    Returns the number of images written. Images are RGB, ``resolution x resolution``, the glyph padded to a
    square with white and resized with a Lanczos filter.
    """
    glyphs = iter_emoji_bitmaps(find_emoji_font(font))
    if max_images is not None:
        glyphs = glyphs[:max_images]
    cfg = PrepareConfig(resolution=resolution, transform="pad", resize_filter="lanczos", channels=3,
                        pad_value=BACKGROUND)
    names = []
    with atomic_write(dest, "wb") as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for idx, (glyph, png) in enumerate(glyphs):
            img = transform_image(decode_image(png), cfg, channels=3)
            buf = io.BytesIO()
            img.save(buf, format="PNG", optimize=True)
            arc = f"{idx // IMAGES_PER_FOLDER:05d}/img{idx:08d}.png"
            zf.writestr(arc, buf.getvalue())
            names.append([arc, glyph])
        meta = {"labels": None, "glyph_names": names,
                "source": "Noto Color Emoji (Apache-2.0), CBDT bitmaps flattened on white"}
        zf.writestr(DATASET_JSON, json.dumps(meta))
    return len(names)

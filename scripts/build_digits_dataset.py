"""Rebuild the built-in labelled ``digits`` dataset from the UCI handwritten digits that scikit-learn ships.

    python scripts/build_digits_dataset.py --resolution 32 --dest src/styleforge/assets/digits32.zip

Needs scikit-learn only for this conversion (``pip install scikit-learn``; styleforge itself never imports it).
The 1,797 8 x 8 images (ink 0..16) become RGB PNGs with dark ink on white, upscaled with a bicubic filter, and
``dataset.json`` holds their classes 0-9 in the official dataset tool's format.
"""

from __future__ import annotations

import argparse
import io
import json
import zipfile

import numpy as np
from PIL import Image

#: the UCI digits' grey levels run 0 (paper) .. 16 (ink)
INK_LEVELS = 16


def digit_images(resolution: int) -> tuple[list[np.ndarray], list[int]]:
    """``(images uint8 [resolution, resolution, 3], classes)`` of every UCI digit, in the data set's order."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = []
    for pixels in data.images:
        grey = np.rint(255 * (1 - pixels / INK_LEVELS)).astype(np.uint8)
        big = Image.fromarray(grey, mode="L").resize((resolution, resolution), Image.BICUBIC)
        images.append(np.asarray(big.convert("RGB")))
    return images, [int(t) for t in data.target]


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed date, so that a rebuild gives the same bytes."""
    return zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))


def build_digits_zip(dest: str, resolution: int) -> int:
    """Write the zip (uncompressed PNGs + ``dataset.json``); returns the number of images."""
    images, classes = digit_images(resolution)
    names = [f"digit{i:05d}.png" for i in range(len(images))]
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, img in zip(names, images, strict=True):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG", optimize=True)
            zf.writestr(_entry(name), buf.getvalue())
        meta = {"labels": [[n, c] for n, c in zip(names, classes, strict=True)],
                "class_names": [str(k) for k in range(10)]}
        zf.writestr(_entry("dataset.json"), json.dumps(meta))
    return len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=32, help="output size in pixels (default 32)")
    parser.add_argument("--dest", default=None, help="output zip (default: digits<RES>.zip here)")
    args = parser.parse_args()
    dest = args.dest or f"digits{args.resolution}.zip"
    n = build_digits_zip(dest, args.resolution)
    print(f"wrote {dest}: {n} images at {args.resolution} px")


if __name__ == "__main__":
    main()

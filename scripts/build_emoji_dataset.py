"""Rebuild the built-in emoji dataset from the Noto Color Emoji font, at any size.

    python scripts/build_emoji_dataset.py --resolution 32 --dest src/styleforge/assets/emoji32.zip

Needs the font (Debian/Ubuntu: ``apt-get install fonts-noto-color-emoji``) and fontTools
(``pip install styleforge[emoji]``).
"""

from __future__ import annotations

import argparse
import time

from styleforge.data.emoji import build_emoji_zip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolution", type=int, default=32, help="output size in pixels (default 32)")
    parser.add_argument("--dest", default=None, help="output zip (default: emoji<RES>.zip here)")
    parser.add_argument("--font", default=None, help="path of NotoColorEmoji.ttf (default: system font dirs)")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N glyphs")
    args = parser.parse_args()
    dest = args.dest or f"emoji{args.resolution}.zip"
    t0 = time.perf_counter()
    n = build_emoji_zip(dest, resolution=args.resolution, font=args.font, max_images=args.max_images)
    print(f"wrote {dest}: {n} images at {args.resolution} px in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

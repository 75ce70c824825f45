"""``styleforge dataset``: prepare a training zip from a folder or zip of images."""

from __future__ import annotations

import click

from styleforge.cli._common import user_errors

__all__ = ["command"]


@click.command("dataset")
@click.option("--source", required=True, type=click.Path(exists=True), help="Folder or zip of images.")
@click.option("--dest", required=True, type=click.Path(), help="Output .zip (PNGs + dataset.json).")
@click.option("--resolution", required=True,
              help="Output size in pixels: 256 (square) or WxH such as 512x384 (keeps that aspect ratio).")
@click.option("--transform", type=click.Choice(["center-crop", "center-crop-wide", "pad"]),
              default="center-crop", show_default=True,
              help="How images are fitted to the output shape: crop the largest centred region of its aspect "
                   "ratio, or pad to it (center-crop-wide: square output only).")
@click.option("--pad-value", type=click.IntRange(0, 255), default=0, show_default=True,
              help="Fill of --transform pad and center-crop-wide (0 = black, 255 = white).")
@click.option("--resize-filter", type=click.Choice(["box", "lanczos"]), default="lanczos", show_default=True)
@click.option("--max-images", type=int, default=None, help="Keep only the first N images (sorted by name).")
@click.option("--channels", type=click.Choice(["1", "3", "4"]), default=None,
              help="Convert to grayscale (1), RGB (3) or RGBA (4); default: keep the source's.")
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable images instead of stopping.")
@user_errors
def command(source: str, dest: str, resolution: str, transform: str, pad_value: int, resize_filter: str,
            max_images: int | None, channels: str | None, skip_bad: bool) -> None:
    """Write DEST: the images of SOURCE centre-cropped/padded and resized to RESOLUTION, with labels."""
    from styleforge.data.aspect import parse_size, size_pair
    from styleforge.data.prepare import PrepareConfig, prepare_dataset

    cfg = PrepareConfig(resolution=parse_size(resolution), transform=transform, resize_filter=resize_filter,
                        max_images=max_images, channels=None if channels is None else int(channels),
                        skip_bad=skip_bad, pad_value=pad_value)
    res = prepare_dataset(source, dest, cfg)
    labels = f", {res.num_classes} classes" if res.num_classes else ""
    skipped = f", {len(res.skipped)} skipped" if res.skipped else ""
    width, height = size_pair(res.resolution)
    click.echo(f"Wrote {res.dest}: {res.num_images} images {width}x{height}x{res.channels}"
               f"{labels}{skipped}.")

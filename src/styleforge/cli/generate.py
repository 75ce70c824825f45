"""``styleforge generate``: images (one PNG per seed, or a grid) from a network."""

from __future__ import annotations

from pathlib import Path

import click

from styleforge.cli._common import pick_device, user_errors
from styleforge.utils.errors import UserInputError

__all__ = ["command", "parse_translate", "parse_condition"]


def parse_translate(text: str | None) -> tuple[float, float] | None:
    """``"0.1,-0.2"`` -> ``(0.1, -0.2)``; ``None`` stays ``None``."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise UserInputError(
            f"--translate expects two numbers 'tx,ty' (image-size units), got {text!r}."
        ) from None


def parse_condition(class_idx: str | None, cond_vector: str | None) -> tuple[int | list[int] | None, list | None]:
    """``--class 3`` -> ``3``, ``--class 3,7`` -> ``[3, 7]``; ``--cond-vector 0.2,0.9`` -> ``[0.2, 0.9]``."""
    from styleforge.data.labels import parse_numbers

    classes: int | list[int] | None = None
    if class_idx is not None:
        values = parse_numbers(class_idx, "--class")
        if not values or any(v != int(v) for v in values):
            raise UserInputError(f"--class takes class indices such as 3 or 3,7, got {class_idx!r}.")
        classes = int(values[0]) if len(values) == 1 and "," not in class_idx else [int(v) for v in values]
    vector = parse_numbers(cond_vector, "--cond-vector") if cond_vector is not None else None
    return classes, vector


@click.command(name="generate")
@click.option(
    "--network", "network", required=True, help="Styleforge directory, official .pkl, or builtin:NAME."
)
@click.option("--seeds", default=None, help="Seeds, e.g. '0-7,12'.")
@click.option(
    "--projected-w", default=None, type=click.Path(exists=True, dir_okay=False),
    help="Render the latents of a projected_w.npz (from `styleforge project`) instead of seeds.",
)
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option(
    "--trunc-cutoff", "truncation_cutoff", type=int, default=None, help="Truncate only the first N ws."
)
@click.option("--class", "class_idx", default=None,
              help="Class of a conditional network; several ('3,7') for a multi-label one.")
@click.option("--cond-vector", default=None,
              help="Label values of a network conditioned on continuous attributes, e.g. '0.2,0.9'.")
@click.option("--centroids", "centroids_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Truncate toward the nearest of these W centroids (.npy from `styleforge centroids`).")
@click.option(
    "--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True
)
@click.option("--grid", is_flag=True, help="Write one grid.png instead of one PNG per seed.")
@click.option(
    "--translate", default=None, help="StyleGAN3 only: translate the content by 'tx,ty' (image units)."
)
@click.option(
    "--rotate", type=float, default=None, help="StyleGAN3 only: rotate the content by this many degrees."
)
@click.option(
    "--full-res", is_flag=True, help="PGGAN snapshots taken mid-growth: upsample to the final resolution."
)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Where to write the PNGs.")
@user_errors
def command(
    network: str,
    seeds: str | None,
    projected_w: str | None,
    truncation_psi: float,
    truncation_cutoff: int | None,
    class_idx: str | None,
    cond_vector: str | None,
    centroids_path: str | None,
    noise_mode: str,
    grid: bool,
    translate: str | None,
    rotate: float | None,
    full_res: bool,
    batch_size: int,
    device: str,
    outdir: str,
) -> None:
    """Generate images from a network with the official seed convention (seedNNNN.png or grid.png)."""
    from styleforge.generation import generate_images
    from styleforge.loading import load
    from styleforge.utils.images import make_grid, save_png, to_uint8
    from styleforge.utils.seeding import parse_seeds

    if (seeds is None) == (projected_w is None):
        raise UserInputError("Give exactly one of --seeds and --projected-w.")
    if projected_w is not None:
        from styleforge.inversion.editing import render_projected_w

        out = Path(outdir)
        written = render_projected_w(load(network, device=pick_device(device)).generator, projected_w, out, noise_mode)
        click.echo(f"Wrote {len(written)} image(s) of {projected_w} to {out}.")
        return
    try:
        seed_list = parse_seeds(seeds)
    except ValueError as e:
        raise UserInputError(str(e)) from e
    shift = parse_translate(translate)
    transform = None
    if shift is not None or rotate is not None:
        from styleforge.ops.transforms import transform_matrix

        transform = transform_matrix(translate=shift or (0.0, 0.0), rotate=rotate or 0.0)
    dev = pick_device(device)
    G = load(network, device=dev).generator
    classes, vector = parse_condition(class_idx, cond_vector)
    images = generate_images(
        G,
        seed_list,
        truncation_psi=truncation_psi,
        truncation_cutoff=truncation_cutoff,
        class_idx=classes,
        cond_vector=vector,
        noise_mode=noise_mode,
        transform=transform,
        device=dev,
        batch_size=batch_size,
        full_resolution=full_res,
        progress=True,
        centroids=centroids_path,
    )
    pixels = to_uint8(images)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    if grid:
        save_png(out / "grid.png", make_grid(pixels))
        click.echo(f"Wrote {out / 'grid.png'} ({len(seed_list)} images).")
    else:
        for seed, img in zip(seed_list, pixels, strict=True):
            save_png(out / f"seed{seed:04d}.png", img)
        click.echo(f"Wrote {len(seed_list)} images to {out}.")

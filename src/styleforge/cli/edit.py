"""``styleforge edit``: move latents along a direction of a dirs.npz and write the strips of edited images."""

from __future__ import annotations

import click

from styleforge.cli._common import NETWORK_HELP, load_generator, pick_device, user_errors

__all__ = ["command"]

VIDEO_FRAMES = 60


@click.command(name="edit")
@click.option("--network", required=True, help=NETWORK_HELP)
@click.option("--w", "w_file", default=None, type=click.Path(exists=True, dir_okay=False), help="projected_w.npz.")
@click.option("--seeds", default=None, help="Or seeds to edit, e.g. '0-3'.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation (seeds).")
@click.option("--class", "class_idx", type=int, default=None, help="Class of a conditional network (seeds).")
@click.option("--directions", "dirs_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="dirs.npz from `styleforge directions`.")
@click.option("--index", type=int, default=0, show_default=True, help="Which direction.")
@click.option("--strength", default="-3:3:7", show_default=True,
              help="start:stop:count or a list; GANSpace in standard deviations, others in W units.")
@click.option("--layers", default=None, help="Edit only these ws indices, e.g. '0-5' (default: all).")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--video", is_flag=True, help="Also write edit.mp4 (or .gif) sweeping the strength range.")
@click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda', ...")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@user_errors
def command(
    network: str,
    w_file: str | None,
    seeds: str | None,
    truncation_psi: float,
    class_idx: int | None,
    dirs_file: str,
    index: int,
    strength: str,
    layers: str | None,
    noise_mode: str,
    video: bool,
    device: str,
    outdir: str,
) -> None:
    """Edit latents along one direction: strip_<i>.png per input (one column per strength) and grid.png."""
    from pathlib import Path

    import numpy as np

    from styleforge.inversion.directions import load_directions
    from styleforge.inversion.editing import (
        edit_images,
        edit_strengths,
        load_projected_w,
        parse_index_list,
        parse_strengths,
        ws_from_seeds,
    )
    from styleforge.inversion.projector import check_projectable
    from styleforge.utils.errors import UserInputError
    from styleforge.utils.images import make_grid, save_png, to_uint8
    from styleforge.utils.seeding import parse_seeds

    if (w_file is None) == (seeds is None):
        raise UserInputError("Give exactly one of --w (a projected_w.npz) and --seeds.")
    G = load_generator(network, pick_device(device))
    check_projectable(G)
    ws = load_projected_w(w_file, G) if w_file else ws_from_seeds(G, parse_seeds(seeds), truncation_psi, class_idx)
    d = load_directions(dirs_file)
    if not 0 <= index < len(d.directions):
        raise UserInputError(f"--index {index} out of range: {dirs_file} holds {len(d.directions)} direction(s).")
    rows = parse_index_list(layers, G.num_ws, "ws")
    values = parse_strengths(strength)
    scaled = edit_strengths(d, index, values)
    images = edit_images(G, ws, d.directions[index], scaled, rows, noise_mode)  # [inputs, strengths, C, H, W]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    strips = [make_grid(to_uint8(row), cols=len(values)) for row in images]
    for i, strip in enumerate(strips):
        save_png(out / f"strip_{i:02d}.png", strip)
    save_png(out / "grid.png", make_grid(to_uint8(images.flatten(0, 1)), cols=len(values)))
    click.echo(f"Wrote {len(strips)} strip(s) and grid.png to {out} (strengths {', '.join(f'{v:g}' for v in values)}).")
    if video:
        from styleforge.analysis.video import write_video

        sweep = edit_strengths(d, index, np.linspace(values[0], values[-1], VIDEO_FRAMES))
        frames_img = edit_images(G, ws, d.directions[index], sweep, rows, noise_mode)  # [inputs, frames, ...]
        frames = (make_grid(to_uint8(frames_img[:, f]), cols=len(ws))[:, :, :3] for f in range(len(sweep)))
        res = write_video(out / "edit.mp4", frames, fps=20)
        click.echo(f"Wrote {res.path}. {res.note}".strip())

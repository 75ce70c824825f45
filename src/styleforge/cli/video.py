"""``styleforge video``: latent interpolation video, or a StyleGAN3 translation/rotation sweep."""

from __future__ import annotations

import click

from styleforge.cli._common import NETWORK_HELP, load_generator, pick_device, user_errors

__all__ = ["command"]


def _parse_grid(text: str) -> tuple[int, int]:
    from styleforge.utils.errors import UserInputError

    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserInputError(f"--grid must look like COLSxROWS (e.g. 2x1), got {text!r}.") from None
    return rows, cols


@click.command("video")
@click.option(
    "--network",
    "network",
    required=True,
    help=NETWORK_HELP,
)
@click.option("--seeds", required=True, help="Keyframe seeds, e.g. '0-3' or '0,5,7'.")
@click.option(
    "--frames-per-seed",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Frames per keyframe transition.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output .mp4 (needs styleforge[video]; falls back to .gif) or .gif.",
)
@click.option(
    "--mode",
    type=click.Choice(["interpolate", "translate", "rotate"]),
    default="interpolate",
    show_default=True,
    help="translate/rotate sweep a StyleGAN3 generator's input transform.",
)
@click.option(
    "--space",
    type=click.Choice(["w", "z"]),
    default="w",
    show_default=True,
    help="Latent space to interpolate in.",
)
@click.option("--interpolation", type=click.Choice(["cubic", "linear"]), default="cubic", show_default=True)
@click.option(
    "--grid",
    default="1x1",
    show_default=True,
    help="COLSxROWS grid; the seeds are split evenly over its cells.",
)
@click.option("--no-loop", is_flag=True, help="End at the last keyframe instead of returning to the first.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option(
    "--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True
)
@click.option("--class", "class_idx", default=None,
              help="Class of a conditional network; several ('3,7') for a multi-label one.")
@click.option("--cond-vector", default=None,
              help="Label values of a network conditioned on continuous attributes, e.g. '0.2,0.9'.")
@click.option("--centroids", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Truncate each keyframe toward the nearest of these W centroids (`styleforge centroids`).")
@click.option(
    "--translate-amplitude",
    type=float,
    default=0.125,
    show_default=True,
    help="Radius of the circular translation (image units) in translate mode.",
)
@click.option("--fps", type=float, default=30.0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, ... or auto.")
@user_errors
def command(
    network: str,
    seeds: str,
    frames_per_seed: int,
    out_path: str,
    mode: str,
    space: str,
    interpolation: str,
    grid: str,
    no_loop: bool,
    truncation_psi: float,
    noise_mode: str,
    class_idx: str | None,
    cond_vector: str | None,
    centroids: str | None,
    translate_amplitude: float,
    fps: float,
    device: str,
) -> None:
    """Render a video of the network to OUT."""
    from styleforge.analysis.video import VideoOptions, render_video
    from styleforge.cli.generate import parse_condition
    from styleforge.utils.errors import UserInputError
    from styleforge.utils.seeding import parse_seeds

    try:
        seed_list = tuple(parse_seeds(seeds))
    except ValueError as e:
        raise UserInputError(str(e)) from e
    classes, vector = parse_condition(class_idx, cond_vector)
    options = VideoOptions(
        seeds=seed_list,
        frames_per_seed=frames_per_seed,
        mode=mode,
        space=space,
        interpolation=interpolation,
        grid=_parse_grid(grid),
        loop=not no_loop,
        truncation_psi=truncation_psi,
        noise_mode=noise_mode,
        class_idx=tuple(classes) if isinstance(classes, list) else classes,
        cond_vector=None if vector is None else tuple(vector),
        translate_amplitude=translate_amplitude,
        fps=fps,
        centroids=centroids,
    )
    dev = pick_device(device)
    G = load_generator(network, dev)
    result = render_video(G, out_path, options, device=dev)
    if result.note:
        click.echo(f"Note: {result.note}")
    click.echo(f"Wrote {result.path}: {result.num_frames} frames ({result.format}, {fps:g} fps).")

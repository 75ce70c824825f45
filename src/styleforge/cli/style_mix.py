"""``styleforge style-mix``: the official style-mixing grid."""

from __future__ import annotations

import click

from styleforge.cli._common import NETWORK_HELP, load_generator, pick_device, user_errors

__all__ = ["command"]


@click.command(name="style-mix")
@click.option("--network", required=True, help=NETWORK_HELP)
@click.option("--rows", "row_seeds", required=True, help="Row seeds (their ws are the base), e.g. '85,100'.")
@click.option("--cols", "col_seeds", required=True, help="Column seeds (they give the styles), e.g. '55,821'.")
@click.option("--styles", default="0-6", show_default=True, help="ws indices taken from the column seed.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--class", "class_idx", type=int, default=None, help="Class of a conditional network.")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda', ...")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@user_errors
def command(
    network: str,
    row_seeds: str,
    col_seeds: str,
    styles: str,
    truncation_psi: float,
    class_idx: int | None,
    noise_mode: str,
    device: str,
    outdir: str,
) -> None:
    """Write grid.png: column seeds on top, row seeds on the left, each cell the row seed with the --styles ws of
    the column seed (Karras et al. 2019, fig. 3)."""
    from pathlib import Path

    from styleforge.inversion.editing import parse_index_list, style_mix_grid
    from styleforge.inversion.projector import check_projectable
    from styleforge.utils.images import make_grid, save_png, to_uint8
    from styleforge.utils.seeding import parse_seeds

    G = load_generator(network, pick_device(device))
    check_projectable(G)
    rows, cols = parse_seeds(row_seeds), parse_seeds(col_seeds)
    images = style_mix_grid(G, rows, cols, parse_index_list(styles, G.num_ws, "style"), truncation_psi, class_idx,
                            noise_mode)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    save_png(out / "grid.png", make_grid(to_uint8(images), cols=len(cols) + 1))
    click.echo(f"Wrote {out / 'grid.png'} ({len(rows)} x {len(cols)} mixes).")

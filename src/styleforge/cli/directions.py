"""``styleforge directions``: latent directions for editing (SeFa, GANSpace, InterFaceGAN boundary) -> dirs.npz."""

from __future__ import annotations

import click

from styleforge.cli._common import NETWORK_HELP, load_generator, pick_device, user_errors

__all__ = ["command"]


@click.command(name="directions")
@click.option("--network", required=True, help=NETWORK_HELP)
@click.option("--method", type=click.Choice(["sefa", "ganspace", "boundary"]), required=True, help="How to find them.")
@click.option("--num", type=int, default=20, show_default=True, help="Directions to keep (sefa, ganspace).")
@click.option("--layers", default=None, help="SeFa: ws indices whose style affines are factorised, e.g. '0-5'.")
@click.option("--samples", type=int, default=100_000, show_default=True, help="GANSpace: z samples.")
@click.option("--class", "class_idx", type=int, default=None, help="GANSpace / boundary seeds: class of a cond. G.")
@click.option(
    "--labels", default=None, type=click.Path(exists=True, dir_okay=False),
    help="Boundary: .npz with 'w' [N, w_dim] (or [N, num_ws, w_dim]) and 'labels' [N], or a text/CSV file of "
    "'seed,label' lines (w = mapping of the seed's z).",
)
@click.option("--solver", type=click.Choice(["svm", "logistic"]), default="svm", show_default=True, help="Boundary.")
@click.option("--seed", type=int, default=0, show_default=True, help="GANSpace sampling / boundary split seed.")
@click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda', ...")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .npz (dirs.npz).")
@user_errors
def command(
    network: str,
    method: str,
    num: int,
    layers: str | None,
    samples: int,
    class_idx: int | None,
    labels: str | None,
    solver: str,
    seed: int,
    device: str,
    out: str,
) -> None:
    """Compute editing directions and write them as dirs.npz (keys directions [K, w_dim] unit rows, values [K]
    descending, method, and layers for SeFa)."""
    from styleforge.inversion import directions as dirs
    from styleforge.inversion.editing import parse_index_list
    from styleforge.inversion.projector import check_projectable
    from styleforge.utils.errors import UserInputError

    G = load_generator(network, pick_device(device))
    check_projectable(G)
    if method == "sefa":
        result = dirs.sefa_directions(G, num, parse_index_list(layers, G.num_ws))
    elif method == "ganspace":
        result = dirs.ganspace_directions(G, num, samples, seed=seed, class_idx=class_idx)
    else:
        if labels is None:
            raise UserInputError("--method boundary needs --labels FILE (w codes or seeds with 0/1 labels).")
        w, y = dirs.read_labels(labels, G, class_idx)
        result = dirs.boundary_direction(w, y, solver=solver, seed=seed)
    path = dirs.save_directions(out, result)
    head = ", ".join(f"{v:.4g}" for v in result.values[:5])
    click.echo(f"Wrote {len(result.directions)} {method} direction(s) to {path} (values: {head}).")

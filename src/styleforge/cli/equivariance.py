"""``styleforge equivariance``: EQ-T, EQ-T_frac and EQ-R of a generator, in dB."""

from __future__ import annotations

import click

from styleforge.cli._common import NETWORK_HELP, pick_device, user_errors
from styleforge.utils.errors import UserInputError

__all__ = ["command"]

#: CLI name -> (key in compute_equivariance's result, label printed)
_METRICS = {"eqt_int": "EQ-T", "eqt_frac": "EQ-T_frac", "eqr": "EQ-R"}


@click.command("equivariance")
@click.option(
    "--network",
    default=None,
    help=NETWORK_HELP,
)
@click.option(
    "--model",
    "preset",
    default=None,
    help="Instead of --network: a randomly initialised preset (e.g. stylegan3-r-tiny), seeded by --seed.",
)
@click.option(
    "--fourier-input",
    is_flag=True,
    help="For a StyleGAN2 generator: replace its constant input by Fourier features (the paper's "
    "config B) so that it can be translated and rotated.",
)
@click.option(
    "--metrics",
    "metric_list",
    default="eqt_int,eqt_frac,eqr",
    show_default=True,
    help="Comma-separated subset of eqt_int, eqt_frac, eqr.",
)
@click.option("--num", "num_samples", type=int, default=50_000, show_default=True, help="Samples per metric.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Images per forward pass.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of latents and transforms.")
@click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda', ...")
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Also write the results as JSON here."
)
@click.option(
    "--save-images",
    type=click.Path(file_okay=False),
    default=None,
    help="Write reference, transformed and difference images of the first samples of each metric (valid region "
    "marked) and equivariance.json into this folder.",
)
@click.option(
    "--num-images", type=click.IntRange(min=1), default=4, show_default=True, help="Samples drawn by --save-images."
)
@user_errors
def command(
    network: str | None,
    preset: str | None,
    fourier_input: bool,
    metric_list: str,
    num_samples: int,
    batch_size: int,
    truncation_psi: float,
    seed: int,
    device: str,
    out: str | None,
    save_images: str | None,
    num_images: int,
) -> None:
    """Print the equivariance of a generator: PSNR (dB) between g(transformed input) and transformed g."""
    import torch
    from tqdm import tqdm

    from styleforge.metrics.equivariance import EquivarianceConfig, compute_equivariance, with_fourier_input

    if (network is None) == (preset is None):
        raise UserInputError("Give exactly one of --network PATH or --model PRESET.")
    chosen = [m.strip() for m in metric_list.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(_METRICS))
    if unknown or not chosen:
        raise UserInputError(f"Unknown metric(s) {unknown or chosen}; choose from {', '.join(_METRICS)}.")
    dev = pick_device(device)
    if network is not None:
        from styleforge.loading import load

        G = load(network, device=dev).generator
    else:
        from styleforge.models.registry import create_model

        torch.manual_seed(seed)
        G = create_model(preset)
    if fourier_input:
        G = with_fourier_input(G)
    config = EquivarianceConfig(
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        truncation_psi=truncation_psi,
        **{m: True for m in chosen},
    )
    collector = None
    if save_images is not None:
        from styleforge.analysis.equivariance_images import EquivarianceImageCollector

        collector = EquivarianceImageCollector(num_images)
    with tqdm(total=num_samples, desc="equivariance", unit="img", leave=False) as bar:
        results = compute_equivariance(
            G, config, device=dev, progress=lambda n: bar.update(n - bar.n), on_batch=collector
        )
    for key in _METRICS:
        if key in results:
            click.echo(f"{_METRICS[key]:<10} {results[key]:8.2f} dB")
    if out is not None:
        from styleforge.utils.io import atomic_write_json

        atomic_write_json(
            out,
            {
                "network": network or f"preset:{preset}",
                "num_samples": num_samples,
                "seed": seed,
                "results_db": results,
            },
        )
    if collector is not None:
        for name, path in collector.write(save_images, results).items():
            click.echo(f"  {name}: {path}")

"""``styleforge droplets``: detector for localised feature-map spikes ("water droplets")."""

from __future__ import annotations

import click

from styleforge.cli._common import load_generator, pick_device, sampling_options, user_errors

__all__ = ["command"]


@click.command("droplets")
@sampling_options(default_num=200)
@click.option("--threshold", type=float, default=10.0, show_default=True,
              help="Peak ratio (max / median activation magnitude) that counts as a droplet.")
@click.option("--min-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Skip layers smaller than this many pixels per side.")
@user_errors
def command(
    network: str,
    num_samples: int,
    batch_size: int,
    truncation_psi: float,
    noise_mode: str,
    seed: int,
    out_dir: str,
    device: str,
    threshold: float,
    min_size: int,
) -> None:
    """Write droplets.png (peak ratio per layer), droplets_worst.png and droplets.json into OUT."""
    from styleforge.analysis.droplets import DropletOptions, run_droplets

    options = DropletOptions(
        num_samples=num_samples,
        batch_size=batch_size,
        threshold=threshold,
        min_size=min_size,
        seed=seed,
        truncation_psi=truncation_psi,
        noise_mode=noise_mode,
    )
    dev = pick_device(device)
    result = run_droplets(load_generator(network, dev), out_dir, options, device=dev)
    click.echo(f"{'layer':<14} {'size':>5} {'median':>8} {'max':>8} {'> ' + format(threshold, 'g'):>8}")
    for layer in result.layers:
        click.echo(
            f"{layer.name:<14} {layer.size:>5} {layer.median_ratio:8.2f} {layer.max_ratio:8.2f} "
            f"{layer.share_above:8.1%}"
        )
    verdict = "droplets found" if result.has_droplets else "no droplets"
    click.echo(f"{verdict} ({result.num_samples} samples); worst: {result.worst['layer']} "
               f"sample {result.worst['sample']}, ratio {result.worst['ratio']:.2f}")
    for name, path in result.files.items():
        click.echo(f"  {name}: {path}")

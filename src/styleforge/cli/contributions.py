"""``styleforge contributions``: share of each tRGB level in a skip generator's output."""

from __future__ import annotations

import click

from styleforge.cli._common import load_generator, pick_device, sampling_options, user_errors

__all__ = ["command"]


@click.command("contributions")
@sampling_options(default_num=1000)
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
) -> None:
    """Write contributions.png (bar plot), contributions_sample.png and contributions.json into OUT."""
    from styleforge.analysis.contributions import ContributionOptions, run_contributions

    options = ContributionOptions(
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        truncation_psi=truncation_psi,
        noise_mode=noise_mode,
    )
    dev = pick_device(device)
    result = run_contributions(load_generator(network, dev), out_dir, options, device=dev)
    click.echo(f"{'level':>7} {'std share':>10} {'var share':>10} {'cov share':>10}   ({result.num_samples} samples)")
    s = result.shares
    for i, res in enumerate(result.resolutions):
        click.echo(
            f"{res:>5}px {s['std_share'][i]:10.4f} {s['variance_share'][i]:10.4f} {s['covariance_share'][i]:10.4f}"
        )
    for name, path in result.files.items():
        click.echo(f"  {name}: {path}")

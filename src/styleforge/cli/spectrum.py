"""``styleforge spectrum``: mean power spectrum of a generator's images against a dataset."""

from __future__ import annotations

import click

from styleforge.cli._common import NETWORK_HELP, load_generator, pick_device, user_errors

__all__ = ["command"]


@click.command("spectrum")
@click.option(
    "--network",
    "network",
    required=True,
    help=NETWORK_HELP,
)
@click.option("--data", default=None, help="Dataset to compare with: a folder, a zip or 'emoji'.")
@click.option(
    "--num",
    "num_images",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Images averaged per source.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option(
    "--channel-mode",
    type=click.Choice(["gray", "channels"]),
    default="gray",
    show_default=True,
    help="Luma spectrum, or the mean of per-channel spectra.",
)
@click.option(
    "--window",
    type=click.Choice(["kaiser", "hann", "none"]),
    default="kaiser",
    show_default=True,
    help="Window applied before the FFT (Kaiser beta=8 by default).",
)
@click.option(
    "--fft-padding",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Zero-pad the FFT to this many times the image size.",
)
@click.option(
    "--db-range", type=(float, float), default=None, help="Colour scale LOW HIGH in dB (default: auto)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, ... or auto.")
@user_errors
def command(
    network: str,
    data: str | None,
    num_images: int,
    out_dir: str,
    batch_size: int,
    truncation_psi: float,
    channel_mode: str,
    window: str,
    fft_padding: int,
    db_range: tuple[float, float] | None,
    seed: int,
    device: str,
) -> None:
    """Write spectrum_heatmap.png, spectrum_slices.png/.csv and spectrum.json into OUT."""
    from styleforge.analysis.spectrum import SpectrumOptions, run_spectrum

    options = SpectrumOptions(
        num_images=num_images,
        batch_size=batch_size,
        channel_mode=channel_mode,
        window=window,
        fft_padding=fft_padding,
        truncation_psi=truncation_psi,
        seed=seed,
        db_range=db_range,
    )
    dev = pick_device(device)
    G = load_generator(network, dev)
    dataset = None
    if data is not None:
        from styleforge.data import open_dataset
        from styleforge.models.base import image_size

        width, height = image_size(G)
        dataset = open_dataset(data, resolution=width if width == height else (width, height))
    result = run_spectrum(G, out_dir, dataset=dataset, options=options, device=dev)
    counts = ", ".join(f"{k}: {v} images" for k, v in result.counts.items())
    click.echo(f"Spectra ({counts}); colour scale {result.db_range[0]:g} to {result.db_range[1]:g} dB.")
    for name, path in result.files.items():
        click.echo(f"  {name}: {path}")

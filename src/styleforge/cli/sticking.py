"""``styleforge sticking``: texture-sticking average, sliced image and sharpness of a generator."""

from __future__ import annotations

import click

from styleforge.cli._common import NETWORK_HELP, load_generator, pick_device, user_errors

__all__ = ["command"]


@click.command("sticking")
@click.option("--network", required=True, help=NETWORK_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Central latent (interpolates to seed + 1).")
@click.option("--frames", type=click.IntRange(min=2), default=64, show_default=True, help="Images averaged.")
@click.option(
    "--radius", type=float, default=0.05, show_default=True, help="Std of the latent perturbation per z coordinate."
)
@click.option(
    "--translate",
    type=float,
    default=0.05,
    show_default=True,
    help="Largest random translation per axis (image units) for networks with an input transform; 0 = none.",
)
@click.option(
    "--fourier-input",
    is_flag=True,
    help="StyleGAN2: replace the constant input by Fourier features (the paper's config B) so that frames can "
    "be translated; only meaningful for networks trained that way.",
)
@click.option("--slice-row", type=int, default=None, help="Pixel row of the sliced image (default: the middle).")
@click.option(
    "--hf-cutoff", type=float, default=0.5, show_default=True, help="Sharpness counts energy above this x Nyquist."
)
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--class", "class_idx", type=int, default=None, help="Class of a conditional network.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, ... or auto.")
@user_errors
def command(
    network: str,
    seed: int,
    frames: int,
    radius: float,
    translate: float,
    fourier_input: bool,
    slice_row: int | None,
    hf_cutoff: float,
    truncation_psi: float,
    noise_mode: str,
    class_idx: int | None,
    batch_size: int,
    out_dir: str,
    device: str,
) -> None:
    """Write sticking.png (central frame | average), sticking_frames.png, sticking_slice.png and sticking.json."""
    import torch

    from styleforge.analysis.sticking import StickingOptions, run_sticking
    from styleforge.metrics.equivariance import with_fourier_input

    options = StickingOptions(
        seed=seed,
        frames=frames,
        radius=radius,
        translate=translate,
        slice_row=slice_row,
        hf_cutoff=hf_cutoff,
        truncation_psi=truncation_psi,
        noise_mode=noise_mode,
        class_idx=class_idx,
        batch_size=batch_size,
    )
    dev = pick_device(device)
    G = load_generator(network, dev)
    if fourier_input:
        torch.manual_seed(seed)  # the new Fourier input is drawn from the global generator
        G = with_fourier_input(G).to(dev)
    result = run_sticking(G, out_dir, options, device=dev)
    moved = "latent perturbations and translations" if result.translated else "latent perturbations only"
    click.echo(
        f"sharpness {result.sharpness:.4f} (vs mean frame {result.sharpness_vs_frames:.4f}), "
        f"frame change {result.frame_change:.4f}; {frames} frames, {moved}."
    )
    for name, path in result.files.items():
        click.echo(f"  {name}: {path}")

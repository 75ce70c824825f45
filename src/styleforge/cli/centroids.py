"""``styleforge centroids``: k-means centroids of W for multi-modal truncation (``generate/video --centroids``)."""

from __future__ import annotations

import click

from styleforge.cli._common import NETWORK_HELP, load_generator, pick_device, user_errors

__all__ = ["command"]


@click.command("centroids")
@click.option("--network", required=True, help=NETWORK_HELP)
@click.option("--num", type=click.IntRange(min=1), default=10_000, show_default=True, help="W samples to cluster.")
@click.option("--k", "k", type=click.IntRange(min=1), default=64, show_default=True, help="Number of centroids.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the samples and of k-means.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output .npy ([K, w_dim]).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, ... or auto.")
@user_errors
def command(network: str, num: int, k: int, seed: int, batch_size: int, out_path: str, device: str) -> None:
    """Cluster W samples of a network into K centroids (the official multi-modal truncation's .npy)."""
    from styleforge.centroids import compute_centroids, save_centroids

    dev = pick_device(device)
    G = load_generator(network, dev)
    centroids = compute_centroids(G, num=num, k=k, seed=seed, batch_size=batch_size, device=dev)
    path = save_centroids(out_path, centroids)
    click.echo(f"Wrote {path}: {centroids.shape[0]} centroids of {num} W samples (w_dim {centroids.shape[1]}).")

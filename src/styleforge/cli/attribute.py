"""``styleforge attribute``: project images and report their reconstruction distance (generated vs real)."""

from __future__ import annotations

import click

from styleforge.cli._common import NETWORK_HELP, load_generator, pick_device, user_errors
from styleforge.cli.project import build_distance, distance_options, projection_options, tqdm_progress

__all__ = ["command"]


@click.command(name="attribute")
@click.option("--network", required=True, help=NETWORK_HELP)
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False), help="Images to test.")
@click.option("--generated", default=None, type=click.Path(exists=True, file_okay=False),
              help="A folder of images this network generated, as the reference group.")
@click.option("--generated-seeds", default=None, help="Or generate the reference group from these seeds, e.g. '0-15'.")
@projection_options
@distance_options
@click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda', ...")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@user_errors
def command(
    network: str,
    images: str,
    generated: str | None,
    generated_seeds: str | None,
    num_steps: int,
    space: str,
    class_spec: str | None,
    batch_size: int,
    distance: str,
    vgg16_lpips: str | None,
    vgg16: str | None,
    lpips: str | None,
    lite0: str | None,
    device: str,
    outdir: str,
) -> None:
    """Project every image of --images (and of the generated group, if given) and write distances.json; with both
    groups, histogram.png of the two distance distributions (the StyleGAN2 paper's attribution figure)."""
    from pathlib import Path

    import torch

    from styleforge.inversion.attribution import distance_histogram
    from styleforge.inversion.projector import ProjectorConfig, check_projectable
    from styleforge.inversion.run import project_targets
    from styleforge.inversion.targets import load_targets, target_size
    from styleforge.utils.errors import UserInputError
    from styleforge.utils.images import save_png
    from styleforge.utils.io import atomic_write_json

    if generated and generated_seeds:
        raise UserInputError("Give at most one of --generated and --generated-seeds.")
    dev = pick_device(device)
    G = load_generator(network, dev)
    check_projectable(G)
    dist = build_distance(distance, vgg16_lpips, vgg16, lpips, lite0, dev)
    cfg = ProjectorConfig(num_steps=num_steps, space=space)
    groups: list[tuple[str, list[str], torch.Tensor]] = []
    files, targets = load_targets(images, target_size(G), G.img_channels)
    groups.append(("images", [f.stem for f in files], targets))
    if generated:
        files, targets = load_targets(generated, target_size(G), G.img_channels)
        groups.append(("generated", [f.stem for f in files], targets))
    elif generated_seeds:
        from styleforge.generation import generate_images
        from styleforge.utils.seeding import parse_seeds

        seeds = parse_seeds(generated_seeds)
        cls = int(class_spec) if class_spec not in (None, "auto") else None
        imgs = generate_images(G, seeds, class_idx=cls, device=dev).clamp(-1, 1)
        groups.append(("generated", [f"seed{s:04d}" for s in seeds], imgs))
    out = Path(outdir)
    report: dict[str, dict[str, dict[str, float]]] = {}
    for label, names, targets in groups:
        results = project_targets(G, names, targets, dist, out / label, cfg, class_spec=class_spec,
                                  batch_size=batch_size, video=False, progress_factory=tqdm_progress,
                                  classifier_weights=lite0)
        report[label] = {r.name: {"distance": r.distance, "psnr": r.psnr} for r in results}
        d = [r.distance for r in results]
        click.echo(f"{label}: {len(d)} image(s), {dist.name} distance mean {sum(d) / len(d):.4f} "
                   f"(min {min(d):.4f}, max {max(d):.4f}), mean PSNR {sum(r.psnr for r in results) / len(d):.2f} dB")
    atomic_write_json(out / "distances.json", {"distance": dist.name, "groups": report})
    if len(report) == 2:
        plot = distance_histogram(
            [(label, [v["distance"] for v in report[label].values()]) for label in ("generated", "images")],
            title="Reconstruction distance after projection", xlabel=f"{dist.name} distance",
        )
        save_png(out / "histogram.png", plot)
        click.echo(f"Wrote {out / 'histogram.png'}.")
    click.echo(f"Wrote {out / 'distances.json'}.")

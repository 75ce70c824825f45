"""``styleforge convert IN OUT``: any network we read into styleforge's format, or into a rosinality checkpoint."""

from __future__ import annotations

import click

from styleforge.cli._common import user_errors

__all__ = ["command"]

#: output formats of --to
FORMATS = ("styleforge", "rosinality")


@click.command(name="convert")
@click.argument("source")
@click.argument("dest", type=click.Path())
@click.option(
    "--to",
    "to_format",
    type=click.Choice(FORMATS),
    default="styleforge",
    show_default=True,
    help="styleforge: a directory (config.json + model.safetensors). rosinality: a stylegan2-pytorch .pt checkpoint.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@user_errors
def command(source: str, dest: str, to_format: str, progress: bool) -> None:
    """Convert SOURCE into DEST.

    SOURCE: an official .pkl (PyTorch snapshot or TensorFlow StyleGAN2 pickle), a rosinality/stylegan2-pytorch
    .pt checkpoint, a styleforge directory, a training run directory, a training_state.pt or builtin:NAME. Nothing
    from the file is executed. With --to styleforge (default) DEST is a directory for styleforge.load(DEST) or
    --network DEST; with --to rosinality DEST is a .pt file that rosinality's Generator loads (g_ema, g, d, args).
    """
    from tqdm import tqdm

    from styleforge.loading import load, save

    # disable=None: shown on a terminal only (not in pipes, logs or tests)
    with tqdm(total=2, desc="convert", unit="step", disable=None if progress else True, leave=False) as bar:
        bar.set_postfix_str("reading")
        loaded = load(source)
        bar.update()
        nets = loaded.networks()
        bar.set_postfix_str("writing")
        if to_format == "rosinality":
            from styleforge.convert.rosinality import save_rosinality

            out = save_rosinality(dest, **nets)
        else:
            extra = {"converted_from": str(source), "source_format": loaded.source}
            if loaded.augment_p is not None:
                extra["augment_p"] = loaded.augment_p
            if loaded.training_set_kwargs is not None:
                extra["training_set_kwargs"] = loaded.training_set_kwargs
            out = save(dest, **nets, extra=extra)
        bar.update()
    click.echo(f"Read {loaded.path} ({loaded.source} format).")
    for name, net in nets.items():
        count = sum(t.numel() for t in net.state_dict().values())
        click.echo(f"  {name:6s} {type(net).__name__:32s} {count:>12,d} numbers")
    if loaded.augment_p is not None:
        click.echo(f"  augment p = {loaded.augment_p:g}")
    click.echo(f"Wrote {out} ({to_format} format).")

"""``styleforge convert IN OUT``: an official pickle (or a styleforge directory) to styleforge's format."""

from __future__ import annotations

import click

from styleforge.cli._common import user_errors

__all__ = ["command"]


@click.command(name="convert")
@click.argument("source")
@click.argument("dest", type=click.Path(file_okay=False))
@user_errors
def command(source: str, dest: str) -> None:
    """Convert SOURCE (official .pkl, styleforge directory, builtin:NAME) into the directory DEST.

    The official pickle is read without executing anything from it. DEST receives config.json and
    model.safetensors; load it with styleforge.load(DEST) or --network DEST.
    """
    from styleforge.loading import load, save

    loaded = load(source)
    nets = loaded.networks()
    extra = {"converted_from": str(source), "source_format": loaded.source}
    if loaded.augment_p is not None:
        extra["augment_p"] = loaded.augment_p
    if loaded.training_set_kwargs is not None:
        extra["training_set_kwargs"] = loaded.training_set_kwargs
    out = save(dest, **nets, extra=extra)
    click.echo(f"Read {loaded.path} ({loaded.source} format).")
    for name, net in nets.items():
        count = sum(t.numel() for t in net.state_dict().values())
        click.echo(f"  {name:6s} {type(net).__name__:32s} {count:>12,d} numbers")
    if loaded.augment_p is not None:
        click.echo(f"  augment p = {loaded.augment_p:g}")
    click.echo(f"Wrote {out}.")

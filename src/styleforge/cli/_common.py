"""Helpers shared by the CLI commands."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from styleforge.utils.errors import StyleforgeError

__all__ = ["user_errors", "pick_device", "load_generator", "sampling_options", "NETWORK_HELP"]

#: help text of every --network option
NETWORK_HELP = (
    "Network: a styleforge directory, a training run directory (newest snapshot), a training_state.pt, an official "
    ".pkl (PyTorch or TensorFlow), a rosinality .pt or builtin:NAME (G_ema is used)."
)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-facing errors (bad path, bad image, unknown pickle, ...) into a clean ``Error: ...`` line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (StyleforgeError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
            raise click.ClickException(str(e)) from e

    return wrapper


def pick_device(name: str | None) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; anything else is passed through."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_generator(network: str, device: str):  # noqa: ANN201  (a styleforge Network)
    """The generator of a saved network (our format, an official pickle or ``builtin:NAME``): ``G_ema``, else ``G``."""
    from styleforge.loading import load
    from styleforge.utils.errors import UserInputError

    nets = load(network, device=device)
    G = nets.G_ema if nets.G_ema is not None else nets.G
    if G is None:
        raise UserInputError(f"{network} holds no generator (neither G_ema nor G).")
    return G.eval().requires_grad_(False).to(device)


def sampling_options(default_num: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options of the analyses that draw random samples from ``--network``: ``--num`` (``num_samples``),
    ``--batch`` (``batch_size``), ``--trunc`` (``truncation_psi``), ``--noise-mode``, ``--seed``, ``--out``
    (``out_dir``) and ``--device``."""
    options = [
        click.option("--network", required=True, help=NETWORK_HELP),
        click.option("--num", "num_samples", type=click.IntRange(min=1), default=default_num, show_default=True,
                     help="Random samples."),
        click.option("--batch", "batch_size", type=click.IntRange(min=1), default=16, show_default=True),
        click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi."),
        click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const",
                     show_default=True),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latents."),
        click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder."),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, ... or auto."),
    ]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate

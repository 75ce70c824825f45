"""Helpers shared by the CLI commands."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from styleforge.utils.errors import StyleforgeError

__all__ = ["user_errors", "pick_device", "load_generator", "NETWORK_HELP"]

#: help text of every --network option
NETWORK_HELP = "Network: a styleforge directory, an official .pkl snapshot or builtin:NAME (G_ema is used)."


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

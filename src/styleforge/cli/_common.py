"""Helpers shared by the CLI commands."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from styleforge.utils.errors import StyleforgeError

__all__ = ["user_errors", "pick_device"]


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

"""Seed parsing and reproducible latent sampling."""

from __future__ import annotations

import re

import numpy as np
import torch

from styleforge.utils.errors import UserInputError

__all__ = ["parse_seeds", "z_from_seed"]


def parse_seeds(spec: str | int | list[int]) -> list[int]:
    """Parse a seed list such as ``"0-7,12"`` into ``[0, 1, ..., 7, 12]``.

    Ranges are inclusive. Raises :class:`UserInputError` (a ``ValueError``) with the offending part for anything else.
    """
    if isinstance(spec, int):
        return [spec]
    if isinstance(spec, (list, tuple)):
        return [int(s) for s in spec]
    seeds: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m and int(m.group(1)) <= int(m.group(2)):
            seeds.extend(range(int(m.group(1)), int(m.group(2)) + 1))
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise UserInputError(
                f"Bad seed specification {part!r} in {spec!r}: use non-negative integers and ranges like '0-7,12'."
            )
    if not seeds:
        raise UserInputError(f"No seeds in {spec!r}: use integers and ranges like '0-7,12'.")
    return seeds


def z_from_seed(seed: int, z_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The latent the official generation scripts use for ``seed``: ``RandomState(seed).randn(1, z_dim)``."""
    z = np.random.RandomState(seed).randn(1, z_dim)
    return torch.from_numpy(z).to(device=device, dtype=torch.float32)

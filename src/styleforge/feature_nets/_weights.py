"""Reading plain state-dict weight files and loading them strictly, shared by the feature networks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from styleforge.utils.errors import UserInputError

__all__ = ["load_state_file", "strict_load", "rename_keys"]


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A ``torch.save``d state dict, read with ``weights_only=True`` (tensors and plain containers only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise UserInputError(f"{path}: expected a state dict, found {type(state).__name__}.")
    return state


def strict_load(module: nn.Module, state: dict[str, torch.Tensor], source: object) -> None:
    """``module.load_state_dict(state)`` after checking that the keys agree exactly and every shape matches;
    errors name ``source`` (the file) and the first offending keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserInputError(f"{source}: missing {missing[:3]}, unexpected {unexpected[:3]}.")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise UserInputError(f"{source}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}.")
    module.load_state_dict(state)


def rename_keys(
    state: dict[str, torch.Tensor], rules: Sequence[tuple[str, str]]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename ``state``'s keys by a table of ``(regular expression on the whole key, template)`` rows, the
    template's ``{0}``, ``{1}`` ... standing for the groups; values pass unchanged. The first matching row wins.

    Returns:
        ``(renamed state, keys no row matched)``.
    """
    compiled = [(re.compile(pattern), template) for pattern, template in rules]
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        for regex, template in compiled:
            m = regex.fullmatch(key)
            if m:
                out[template.format(*m.groups())] = value
                break
        else:
            unknown.append(key)
    return out, unknown

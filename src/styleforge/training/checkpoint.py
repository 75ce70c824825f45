"""The complete training state (``training_state.pt``) and the exportable network snapshot.

``training_state.pt`` holds only tensors and plain Python values, so it is read with
``torch.load(weights_only=True)``: the state dicts of G, D and G_ema, both Adam optimisers, the augment pipe
(its ``p``) and the ADA accumulators, ``pl_mean``, the counters (``cur_nimg``, ``cur_tick``, ``batch_idx``), the
resolved config, the recipe kind and the version. No RNG state is needed: the engine derives every random number
from the seed and the counters. It is
written to a temporary file and renamed, so an interrupted save leaves the previous state intact.

The exportable snapshot is a directory in styleforge's own format (:func:`styleforge.loading.save`), loadable by
``styleforge generate`` and ``styleforge.load``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from styleforge.utils.errors import UserInputError
from styleforge.utils.io import atomic_write_bytes

__all__ = [
    "STATE_FILE",
    "STATE_FORMAT_VERSION",
    "save_training_state",
    "load_training_state",
    "find_latest_run",
]

#: File name of the training state inside a run directory.
STATE_FILE = "training_state.pt"
#: Version of the training-state layout (bumped when keys change): 2 = the shared engine (``kind``, the config as a
#: dict, no RNG states: every random number is derived from the seed and the counters).
STATE_FORMAT_VERSION = 2


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (serialised in memory first, then renamed into place)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training state with ``weights_only=True`` (no code is executed), tensors on the CPU."""
    p = Path(path)
    if p.is_dir():
        p = p / STATE_FILE
    if not p.is_file():
        raise UserInputError(f"No training state at {p}; give a run directory or its {STATE_FILE}.")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any unpickling problem is a bad file for the user)
        raise UserInputError(f"{p} is not a readable styleforge training state ({e}).") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise UserInputError(f"{p} is not a styleforge training state.")
    if state["format_version"] > STATE_FORMAT_VERSION:
        raise UserInputError(f"{p} was written by a newer styleforge (format {state['format_version']}).")
    return state


def find_latest_run(outdir: str | os.PathLike) -> Path:
    """The run directory in ``outdir`` with the highest number that holds a training state."""
    root = Path(outdir)
    runs = []
    if root.is_dir():
        for d in root.iterdir():
            prefix = d.name.split("-", 1)[0]
            if d.is_dir() and prefix.isdigit() and (d / STATE_FILE).is_file():
                runs.append((int(prefix), d))
    if not runs:
        raise UserInputError(f"--resume latest: no run with a {STATE_FILE} in {root}.")
    return max(runs)[1]

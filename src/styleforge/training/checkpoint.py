"""The complete training state (``training_state.pt``) and the exportable network snapshot.

``training_state.pt`` holds only tensors and plain Python values, so it is read with
``torch.load(weights_only=True)``: the state dicts of G, D and G_ema, both Adam optimisers, the augment pipe
(its ``p``) and the ADA accumulators, ``pl_mean``, the RNG states of every process (torch, CUDA, numpy,
python), the counters (``cur_nimg``, ``cur_tick``, ``batch_idx``), the resolved config and the version. It is
written to a temporary file and renamed, so an interrupted save leaves the previous state intact.

The exportable snapshot is a directory in styleforge's own format (:func:`styleforge.loading.save`), loadable by
``styleforge generate`` and ``styleforge.load``.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from styleforge.utils.errors import UserInputError
from styleforge.utils.io import atomic_write_bytes

__all__ = [
    "STATE_FILE",
    "STATE_FORMAT_VERSION",
    "capture_rng",
    "restore_rng",
    "save_training_state",
    "load_training_state",
    "find_latest_run",
]

#: File name of the training state inside a run directory.
STATE_FILE = "training_state.pt"
#: Version of the training-state layout (bumped when keys change).
STATE_FORMAT_VERSION = 1


def capture_rng() -> dict[str, Any]:
    """The RNG states of this process as tensors and plain values (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


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

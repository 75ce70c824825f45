"""The complete training state (``training_state.pt``) and the exportable network snapshot.

``training_state.pt`` holds only tensors and plain Python values, so it is read with
``torch.load(weights_only=True)``: the state dicts of G, D and G_ema, both Adam optimisers, the augment pipe
(its ``p``) and the ADA accumulators, ``pl_mean``, the counters (``cur_nimg``, ``cur_tick``, ``batch_idx``), the
resolved config, the recipe kind and the version. No RNG state is needed: the engine derives every random number
from the seed and the counters. It is
written to a temporary file and renamed, so an interrupted save leaves the previous state intact.

The last K states are kept (``--keep-states``, default 2) so that one damaged file never loses the run: each
save writes ``training_state-<cur_nimg, 9 digits>.pt`` and makes ``training_state.pt`` a second name (hard link)
of it, then deletes the older numbered states beyond K. :func:`load_latest_state` reads the newest readable one
and says so when it had to fall back to an older state. A full disk stops the run with :class:`DiskFullError`,
which names the directory and the free space needed; the files already there are untouched.

The exportable snapshot is a directory in styleforge's own format (:func:`styleforge.loading.save`), loadable by
``styleforge generate`` and ``styleforge.load``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from styleforge.utils.errors import StyleforgeError, UserInputError
from styleforge.utils.io import atomic_write_bytes

__all__ = [
    "STATE_FILE",
    "STATE_FORMAT_VERSION",
    "save_training_state",
    "load_training_state",
    "find_latest_run",
    "save_rotated_state",
    "load_latest_state",
    "state_files",
    "remove_stale_temporaries",
    "DiskFullError",
    "disk_full_guard",
    "DEFAULT_KEEP_STATES",
]

#: File name of the training state inside a run directory.
STATE_FILE = "training_state.pt"
#: Version of the training-state layout (bumped when keys change): 2 = the shared engine (``kind``, the config as a
#: dict, no RNG states: every random number is derived from the seed and the counters).
STATE_FORMAT_VERSION = 2
#: How many training states a run keeps by default (``--keep-states``).
DEFAULT_KEEP_STATES = 2
#: The numbered training states kept next to ``training_state.pt``.
_NUMBERED_STATE = re.compile(r"^training_state-(\d{9,})\.pt$")
#: Temporary files of :func:`styleforge.utils.io.atomic_write` (``.<name>.<random>.tmp``).
_ATOMIC_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


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
            if d.is_dir() and prefix.isdigit() and ((d / STATE_FILE).is_file() or state_files(d)):
                runs.append((int(prefix), d))
    if not runs:
        raise UserInputError(f"--resume latest: no run with a {STATE_FILE} in {root}.")
    return max(runs)[1]


# ------------------------------------------------------------------------------------------------------------
# The last K states, and the fallback to an older one.


def state_files(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The numbered states ``training_state-<cur_nimg>.pt`` of a run directory, newest first."""
    root = Path(run_dir)
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_file() and (m := _NUMBERED_STATE.match(p.name))] \
        if root.is_dir() else []
    return sorted(found, reverse=True)


def save_rotated_state(run_dir: str | os.PathLike, state: dict[str, Any], keep: int = DEFAULT_KEEP_STATES) -> Path:
    """Write ``state`` as the run's newest training state and keep only the last ``keep`` states.

    With ``keep == 1`` this is :func:`save_training_state` to ``training_state.pt``. With more, the state is
    written (atomically) to ``training_state-<cur_nimg>.pt``, ``training_state.pt`` becomes a second name of that
    file (a hard link, or a copy where the file system has none), and numbered states older than the last
    ``keep`` are deleted, and so are numbered states newer than ``state`` (the abandoned continuation of a run resumed
    from an older state). Every step leaves a complete newest state behind.

    Returns:
        The numbered file written (``training_state.pt`` when ``keep == 1``).
    """
    if keep < 1:
        raise UserInputError(f"--keep-states must be at least 1, got {keep}.")
    root = Path(run_dir)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    if keep == 1:
        atomic_write_bytes(root / STATE_FILE, data)
        kept: list[Path] = []
    else:
        numbered = root / f"training_state-{int(state['cur_nimg']):09d}.pt"
        atomic_write_bytes(numbered, data)
        _point_state_file_at(root, numbered, data)
        kept = [numbered]
    # Numbered states newer than this one belong to a continuation that was abandoned (a resume from an older
    # state); the rest are kept up to ``keep`` (none when ``training_state.pt`` is the only state).
    cur = int(state["cur_nimg"])
    older = [p for nimg, p in state_files(root) if nimg <= cur or p in kept]
    for nimg, p in state_files(root):
        if nimg > cur and p not in kept:
            p.unlink(missing_ok=True)
    for p in older[keep if keep > 1 else 0 :]:
        p.unlink(missing_ok=True)
    return kept[0] if kept else root / STATE_FILE


def _point_state_file_at(root: Path, numbered: Path, data: bytes) -> None:
    """Make ``training_state.pt`` the newest state: a hard link to ``numbered`` renamed into place."""
    link = root / f".{STATE_FILE}.link.tmp"
    link.unlink(missing_ok=True)
    try:
        os.link(numbered, link)
    except OSError:  # no hard links on this file system: a second copy
        atomic_write_bytes(root / STATE_FILE, data)
        return
    os.replace(link, root / STATE_FILE)


def load_latest_state(run_dir: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """The newest readable training state of a run directory and the file it came from.

    Tries ``training_state.pt`` and the numbered states (a numbered state newer than ``training_state.pt`` wins:
    a save stopped between its two steps). When the newest state cannot be read, an older one is used with a
    warning that names both files.

    Raises:
        UserInputError: no state at all, or none readable (the message lists each file and why).
    """
    root = Path(run_dir)
    main = root / STATE_FILE
    errors: list[str] = []
    main_state: dict[str, Any] | None = None
    if main.is_file():
        try:
            main_state = load_training_state(main)
        except UserInputError as e:
            errors.append(str(e))
    main_nimg = int(main_state.get("cur_nimg", -1)) if main_state is not None else -1
    for nimg, p in state_files(root):
        if nimg <= main_nimg:
            break
        try:
            state = load_training_state(p)
        except UserInputError as e:
            errors.append(str(e))
            continue
        if errors:
            _warn_fallback(errors, p, state)
        return state, p
    if main_state is not None:
        if errors:
            _warn_fallback(errors, main, main_state)
        return main_state, main
    if not errors:
        raise UserInputError(f"No training state in {root}; give a run directory or its {STATE_FILE}.")
    raise UserInputError(f"No readable training state in {root}:\n" + "\n".join(f"  - {e}" for e in errors))


def _warn_fallback(errors: list[str], used: Path, state: dict[str, Any]) -> None:
    warnings.warn(
        "The newest training state is unreadable (" + "; ".join(errors) + f"). Resuming from the previous state "
        f"{used} (kimg {int(state.get('cur_nimg', 0)) / 1000:g}); the training since then is done again.",
        UserWarning, stacklevel=3,
    )


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed write left in a run directory and its snapshot directories."""
    root = Path(run_dir)
    removed = []
    for d in [root, *(p for p in root.glob("network-snapshot-*") if p.is_dir())]:
        for p in d.iterdir():
            if p.is_file() and _ATOMIC_TEMPORARY.match(p.name):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


class DiskFullError(StyleforgeError):
    """A write failed for lack of space; the files written before are intact and the run can be resumed."""


#: ``errno`` values that mean the disk (or the user's quota) is full.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT} if hasattr(errno, "EDQUOT") else {errno.ENOSPC}


@contextlib.contextmanager
def disk_full_guard(directory: str | os.PathLike, needed_bytes: int | Callable[[], int]) -> Iterator[None]:
    """Turn "no space left on device" inside the block into :class:`DiskFullError` naming ``directory``, the free
    space there and ``needed_bytes`` (an estimate of what the next save writes, or a function giving it)."""
    try:
        yield
    except OSError as e:
        if e.errno not in _NO_SPACE:
            raise
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            free = 0
        if callable(needed_bytes):
            needed_bytes = needed_bytes()
        raise DiskFullError(
            f"No space left on the device of {directory} ({e.strerror}). A snapshot with its training state needs "
            f"about {_mb(needed_bytes)} free there; {_mb(free)} is free. The last complete snapshot and training "
            "state are intact: free some space and continue with --resume latest."
        ) from None


def _mb(n: int) -> str:
    return f"{n / 1024**2:.1f} MB"


def state_nbytes(state: dict[str, Any]) -> int:
    """Bytes of the tensors in a (nested) state dict: about what writing it takes on disk."""
    total, stack = 0, [state]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total

"""File helpers: atomic writes, the cache directory and the lookup of weight files.

Every file styleforge writes goes through :func:`atomic_write`: the data is written to a temporary file in the
destination's directory, flushed to disk, and then moved over the destination with :func:`os.replace`. A crash
therefore leaves either the old complete file or the new complete file, never a half-written one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "cache_dir",
    "find_weight_file",
    "WeightsNotFoundError",
]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` and move it over ``path`` when the block ends without error.

    Args:
        path: destination file. Its parent directory is created if needed.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).

    On an exception inside the block the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports mode 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates the file with mode 0600; give it the mode a plain open() would (0666 minus the umask).
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that need a file name (video encoders, ...): yield a temporary path next to ``path``.

    When the block ends without error the temporary file is moved over ``path``; on an exception it is removed and
    ``path`` is left untouched. The file gets the mode a plain ``open()`` would give it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (keys kept in insertion order)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def cache_dir(*parts: str) -> Path:
    """The styleforge cache directory (created on demand), optionally a sub-directory of it.

    ``$STYLEFORGE_CACHE`` if set, else ``$XDG_CACHE_HOME/styleforge``, else ``~/.cache/styleforge``.
    """
    root = os.environ.get("STYLEFORGE_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "styleforge"
    out = base.joinpath(*parts)
    out.mkdir(parents=True, exist_ok=True)
    return out


class WeightsNotFoundError(FileNotFoundError):
    """A weight file that styleforge cannot ship (Inception, VGG16, ...) was not found anywhere."""


def find_weight_file(
    what: str,
    filenames: Sequence[str],
    explicit: str | os.PathLike | None = None,
    env_var: str | None = None,
    extra_candidates: Sequence[str | os.PathLike] = (),
    where_to_get: str = "",
) -> Path:
    """Locate a weight file, in this order: ``explicit``, ``$env_var``, the cache directory, ``extra_candidates``.

    Args:
        what: human name of the weights, used in the error message (``"FID Inception-v3"``).
        filenames: file names accepted in the cache directory (``cache_dir('weights')``).
        explicit: a path given by the caller; if given it must exist.
        env_var: environment variable that may hold a path.
        extra_candidates: further paths to try last (for example a file inside an installed package).
        where_to_get: a sentence telling the user where such a file can be obtained.

    Raises:
        WeightsNotFoundError: nothing found; the message lists every place that was searched.
    """
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise WeightsNotFoundError(f"{what} weights: the file {p} does not exist.")
        return p
    searched: list[str] = []
    if env_var:
        val = os.environ.get(env_var)
        if val:
            p = Path(val).expanduser()
            if p.is_file():
                return p
            searched.append(f"${env_var}={val} (no such file)")
        else:
            searched.append(f"${env_var} (not set)")
    cdir = cache_dir("weights")
    for name in filenames:
        p = cdir / name
        if p.is_file():
            return p
        searched.append(str(p))
    for cand in extra_candidates:
        p = Path(cand)
        if p.is_file():
            return p
        searched.append(str(p))
    msg = [f"Could not find the {what} weights. Searched:"]
    msg += [f"  - {s}" for s in searched]
    fix = f"Put one of {', '.join(filenames)} in {cdir}"
    if env_var:
        fix += f", or set {env_var} to the file's path"
    msg.append(fix + ".")
    if where_to_get:
        msg.append(where_to_get)
    raise WeightsNotFoundError("\n".join(msg))

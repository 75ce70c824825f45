"""Checking every image of a dataset once: decoded in parallel worker processes, the verdicts cached on disk.

:func:`check_images` decodes each file fully (that is what finds a truncated PNG or a text file named ``.jpg``)
and returns, per file, its size and channel count or the reason it cannot be used. The verdicts are written to
``cache_dir("datasets")`` in a small JSON file named after the dataset's absolute path; an entry is reused while
the file it describes is unchanged:

- **zip**: the whole cache is valid while the archive's size and modification time are; after a change, each
  member is reused while its uncompressed size and CRC-32 (from the archive's directory, nothing decoded) are;
- **folder**: each file is reused while its size and modification time are.

So the first run on a 70k-image set decodes every image once (in ``workers`` processes, with a progress bar),
and later runs, every rank of a multi-process run and every ``styleforge metrics`` call read the verdicts in
milliseconds. Only new or changed files are decoded again.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from styleforge.utils.io import atomic_write_json, cache_dir

__all__ = ["check_images", "check_cache_file", "default_check_workers", "CHECK_CACHE_FORMAT", "INLINE_CHECK_MAX"]

#: Bump when the meaning of a cached verdict changes.
CHECK_CACHE_FORMAT = 1
#: Up to this many files are checked in the calling process (starting workers would cost more than it saves).
INLINE_CHECK_MAX = 512
#: Files per task handed to a worker process.
CHECK_CHUNK = 64
#: The progress bar appears only when the check takes longer than this many seconds.
PROGRESS_DELAY_S = 0.5

# Verdict of one file: ``[width, height, channels]`` or ``"reason it is unusable"``.
Verdict = list | str


def default_check_workers() -> int:
    """Processes used to check images: one per CPU core this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def check_cache_file(path: os.PathLike | str) -> os.PathLike:
    """Where the verdicts of the dataset at ``path`` are cached."""
    full = os.path.abspath(os.fspath(path))
    digest = hashlib.sha256(full.encode()).hexdigest()[:24]
    stem = re.sub(r"[^\w.-]", "_", os.path.basename(full.rstrip("/")) or "dataset")
    return cache_dir("datasets") / f"{stem}-{digest}.check.json"


def _verdict(source: Any, name: str) -> Verdict:
    from styleforge.data.dataset import _natural_channels, decode_image

    try:
        data = source.read(name)
    except OSError as e:
        return f"cannot be read ({e})"
    try:
        img = decode_image(data)
    except ValueError as e:
        return str(e)
    return [img.size[0], img.size[1], _natural_channels(img)]


# The source a worker process checks (set once per process by the pool initialiser, not sent with every task).
_WORKER_SOURCE: Any = None


def _init_worker(source: Any) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source


def _check_chunk(names: Sequence[str]) -> list[tuple[str, Verdict]]:
    return [(n, _verdict(_WORKER_SOURCE, n)) for n in names]


def _load_cache(file: os.PathLike, archive_stamp: list) -> tuple[dict[str, list], bool]:
    """``(entries {name: [stamp, verdict]}, whole archive unchanged)`` from a cache file (empty when unusable)."""
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}, False
    if not isinstance(data, dict) or data.get("format") != CHECK_CACHE_FORMAT:
        return {}, False
    entries = data.get("entries")
    if not isinstance(entries, dict):
        return {}, False
    return entries, data.get("archive") == archive_stamp and archive_stamp is not None


def check_images(
    source: Any,
    names: Sequence[str],
    *,
    workers: int | None = None,
    cache: bool = True,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Verdict]:
    """Decode every file in ``names`` once (in parallel, cached) and return ``{name: verdict}``.

    Args:
        source: a dataset source (``styleforge.data.dataset._FolderSource`` or ``_ZipSource``): ``path``,
            ``read(name)`` and ``stamps(names)`` (per-file ``[size, CRC or mtime]``, read without decoding).
        names: the files to check.
        workers: processes that decode (``None``: one per core; ``0`` or ``1``: in this process). At most
            :data:`INLINE_CHECK_MAX` files are always checked in this process.
        cache: read and write the verdict cache (:func:`check_cache_file`).
        progress: show a tqdm bar on stderr (``None``: when the check takes more than half a second).
        log: receives one line when files are decoded (how many, where the verdicts are cached).

    Returns:
        verdict per name: ``[width, height, channels]`` of a usable image, else the reason as a string.
    """
    stamps = source.stamps(names)
    archive_stamp = source.archive_stamp()
    file = check_cache_file(source.path) if cache else None
    entries, archive_same = _load_cache(file, archive_stamp) if file is not None else ({}, False)
    out: dict[str, Verdict] = {}
    todo: list[str] = []
    for n, stamp in zip(names, stamps, strict=True):
        hit = entries.get(n)
        if hit is not None and (archive_same or hit[0] == stamp):
            out[n] = hit[1]
        else:
            todo.append(n)
    if todo:
        if log is not None:
            where = f"; verdicts cached in {file}" if file is not None else ""
            log(f"Checking {len(todo)} image(s) of {source.path} once{where}")
        out.update(_run_checks(source, todo, workers, progress))
    if file is not None and (todo or not archive_same):
        stamp_of = dict(zip(names, stamps, strict=True))
        merged = {n: v for n, v in entries.items() if n not in stamp_of}  # max_images: keep the others
        merged.update({n: [stamp_of[n], out[n]] for n in names})
        try:
            atomic_write_json(file, {"format": CHECK_CACHE_FORMAT, "path": os.path.abspath(source.path),
                                     "archive": archive_stamp, "entries": merged}, indent=None)
        except OSError:
            pass  # a read-only cache directory only costs the next run the same check
    return {n: out[n] for n in names}


def _run_checks(source: Any, names: list[str], workers: int | None, progress: bool | None) -> dict[str, Verdict]:
    from tqdm import tqdm

    workers = default_check_workers() if workers is None else int(workers)
    bar = tqdm(total=len(names), desc="checking images", unit="img", disable=progress is False,
               delay=0 if progress else PROGRESS_DELAY_S, leave=False, dynamic_ncols=True)
    out: dict[str, Verdict] = {}
    with bar:
        if workers <= 1 or len(names) <= INLINE_CHECK_MAX:
            for n in names:
                out[n] = _verdict(source, n)
                bar.update(1)
            return out
        chunks = [names[i : i + CHECK_CHUNK] for i in range(0, len(names), CHECK_CHUNK)]
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(min(workers, len(chunks)), initializer=_init_worker, initargs=(source,)) as pool:
            for part in pool.imap_unordered(_check_chunk, chunks):
                out.update(part)
                bar.update(len(part))
    return out

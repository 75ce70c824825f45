"""Keep freed memory in the process while training on the CPU (glibc only).

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and gives it
back to the kernel on ``free``. A training step on the CPU allocates and frees many such activations, so each of
them is paid for again in page faults: the kernel zeroes every page on first touch. On a 2-core machine that is
about a third of the time of a memory-bound op on a 64 px StyleGAN2 layer (``benchmarks/training.py`` prints the
iteration with and without this setting). :func:`retained_heap` serves large blocks from the heap instead and
keeps freed memory for reuse, as the caching allocators of PyTorch on CUDA and of jemalloc/tcmalloc do; the values
computed do not change. Set ``STYLEFORGE_RETAIN_HEAP=0`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["retained_heap"]

# mallopt(3) parameters and glibc's documented defaults (restored on exit).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_KEEP_BYTES = 1 << 30  # free memory at the top of the heap kept for reuse


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None


@contextmanager
def retained_heap(enabled: bool | None = None) -> Iterator[bool]:
    """Within the block, large allocations come from the heap and freed memory stays in the process.

    Args:
        enabled: ``None`` = on unless the environment sets ``STYLEFORGE_RETAIN_HEAP=0``.

    Yields:
        whether the setting is in force (``False`` when disabled or when the C library is not glibc).
    """
    if enabled is None:
        enabled = os.environ.get("STYLEFORGE_RETAIN_HEAP", "1") != "0"
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    # both settings or neither: a refused second call must not leave the first one in force
    applied = bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
    try:
        yield applied
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        if applied:
            libc.malloc_trim(0)  # give the kept memory back

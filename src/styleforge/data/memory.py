"""Decoded images held once in memory and shared by the data-loader worker processes.

:class:`SharedImageCache` is one block of anonymous shared memory (``mmap(-1, size)``: ``MAP_SHARED``, not backed
by ``/dev/shm``, so a small ``/dev/shm`` in a container does not limit it) holding ``[N, C, H, W]`` uint8 pixels
and one "filled" byte per image. It fills lazily: the first time image ``i`` is decoded (by whichever process),
its pixels are written and then its byte is set; later reads in any process forked from the owner (the
``torch.utils.data.DataLoader`` workers on Linux) copy the pixels out without decoding. Two processes decoding
the same image at once write the same bytes, so there is nothing to lock. The memory is allocated by the
operating system page by page as images arrive, and exists once per training process, never once per worker.

A process started with ``spawn`` cannot inherit the mapping; a pickled cache arrives disabled, and such a worker
decodes from disk (correct, only slower).
"""

from __future__ import annotations

import mmap

import numpy as np

__all__ = ["SharedImageCache"]


class SharedImageCache:
    """Lazily filled shared pixels of ``count`` images of ``shape = (C, H, W)`` (uint8)."""

    def __init__(self, count: int, shape: tuple[int, int, int]) -> None:
        self.count, self.shape = int(count), tuple(int(s) for s in shape)
        per_image = int(np.prod(self.shape))
        self._mem: mmap.mmap | None = mmap.mmap(-1, max(self.count * per_image, 1))
        self._flags_mem: mmap.mmap | None = mmap.mmap(-1, max(self.count, 1))
        self._pixels = np.frombuffer(self._mem, dtype=np.uint8, count=self.count * per_image).reshape(
            self.count, *self.shape)
        self._filled = np.frombuffer(self._flags_mem, dtype=np.uint8, count=self.count)

    @property
    def enabled(self) -> bool:
        return self._mem is not None

    def get(self, i: int) -> np.ndarray | None:
        """A copy of image ``i`` when it has been stored, else ``None``."""
        if self._mem is None or not self._filled[i]:
            return None
        return self._pixels[i].copy()

    def put(self, i: int, pixels: np.ndarray) -> None:
        """Store image ``i`` (``[C, H, W]`` uint8); the filled flag is set after the pixels are written."""
        if self._mem is None or pixels.shape != self.shape:
            return
        self._pixels[i] = pixels
        self._filled[i] = 1

    def num_filled(self) -> int:
        return int(self._filled.sum()) if self._mem is not None else 0

    def __getstate__(self) -> dict:
        # Pickled (a spawned worker): the mapping cannot travel; the copy is disabled.
        return {"count": self.count, "shape": self.shape}

    def __setstate__(self, state: dict) -> None:
        self.count, self.shape = state["count"], state["shape"]
        self._mem = self._flags_mem = None
        self._pixels = self._filled = None

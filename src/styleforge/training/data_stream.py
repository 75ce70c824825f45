"""The real images of a run, decoded ahead by ``torch.utils.data.DataLoader`` worker processes.

The engine fixes which images each chunk sees: chunk ``k`` of the minibatch that starts at image counter
``nimg`` holds positions ``nimg + k * batch_gpu ...`` of the run's seeded order (:class:`DataOrder` in the
engine), and process ``rank`` handles chunks ``rank, rank + world, ...``. :class:`ChunkSampler` replays that
plan ahead of the loop, one list of dataset indices per chunk of this process, and the loader decodes them in
``workers`` processes (in order: the output never depends on the worker count), pins them on CUDA and keeps
``prefetch`` chunks per worker ready. So the images of a chunk are a function of the seed and the image counter
alone, as without workers, and a resumed run reads exactly what the uninterrupted one read.

:class:`RealStream` hands the chunks to the loop. When the loop asks for a chunk the plan did not predict (the
per-process batch was changed, e.g. by halving after an out-of-memory error), the loader restarts at that
chunk; chunks the loop skipped are dropped.
"""

from __future__ import annotations

import collections
import os
import signal
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["ChunkSampler", "RealStream", "default_workers", "MAX_DEFAULT_WORKERS", "SMALL_DATASET_IMAGES"]

#: ``--workers`` default: at most this many loader processes per training process.
MAX_DEFAULT_WORKERS = 4
#: Datasets with at most this many images are read in the training process by default (a worker's start-up
#: costs more than decoding them).
SMALL_DATASET_IMAGES = 1024
#: Chunks each worker keeps decoded ahead (the DataLoader's ``prefetch_factor``).
PREFETCH_CHUNKS = 2

# (batch, batch_gpu, number of rounds) of the minibatch that starts at an image count.
Plan = Callable[[int], tuple[int, int, int]]
# (first order position of a chunk, its size): what a chunk holds.
ChunkKey = tuple[int, int]


def default_workers(num_images: int, processes_per_node: int = 1) -> int:
    """Loader processes per training process: the cores left per process beyond its own, at least 1 and at most
    :data:`MAX_DEFAULT_WORKERS`; 0 for a small dataset (at most :data:`SMALL_DATASET_IMAGES` images)."""
    if num_images <= SMALL_DATASET_IMAGES:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return int(min(max(cores // max(processes_per_node, 1) - 1, 1), MAX_DEFAULT_WORKERS))


class ChunkSampler(Sampler[list[int]]):
    """Dataset indices of this process's chunks, minibatch after minibatch, from ``(nimg, first_round)`` on.

    Args:
        order: ``order.indices(start, count)`` -> dataset indices at positions ``start .. start + count - 1``.
        plan: ``nimg -> (batch, batch_gpu, rounds)`` of the minibatch starting at ``nimg``.
        nimg: image counter of the first minibatch.
        first_round: round of that minibatch to start at.
        rank, world: this process and the number of processes.

    ``keys`` receives ``(start, batch_gpu)`` of every chunk handed out, in order (the loader's outputs come in
    the same order).
    """

    def __init__(self, order, plan: Plan, nimg: int, first_round: int, rank: int, world: int) -> None:
        self.order, self.plan = order, plan
        self.nimg, self.first_round, self.rank, self.world = nimg, first_round, rank, world
        self.keys: collections.deque[ChunkKey] = collections.deque()

    def __iter__(self) -> Iterator[list[int]]:
        nimg, r0 = self.nimg, self.first_round
        while True:
            batch, batch_gpu, rounds = self.plan(nimg)
            for r in range(r0, rounds):
                start = nimg + (r * self.world + self.rank) * batch_gpu
                self.keys.append((start, batch_gpu))
                yield [int(i) for i in self.order.indices(start, batch_gpu)]
            nimg, r0 = nimg + batch, 0

    def __len__(self) -> int:  # an endless stream; DataLoader only needs a number
        return 2**62


def _collate(items: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(image [C, H, W] uint8, label [L] float32)]`` -> uint8 ``[B, C, H, W]``, float32 ``[B, L]``."""
    return (torch.from_numpy(np.stack([it[0] for it in items])),
            torch.from_numpy(np.stack([it[1] for it in items]).astype(np.float32, copy=False)))


def _ignore_stop_signals(worker_id: int) -> None:
    """In a loader process: leave Ctrl-C and SIGTERM (sent to the whole process group by a terminal or a cluster
    scheduler) to the training process, which finishes its minibatch and writes its state while the loader keeps
    serving it; the loader still ends with the training process (the DataLoader watches its parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class RealStream:
    """Real images of this process's chunks, in the order the run's plan fixes (see the module docstring).

    Args:
        dataset: ``dataset[i] -> (uint8 [C, H, W], float32 [L])``.
        order, plan, rank, world: see :class:`ChunkSampler`.
        device: where the images go (pinned host memory and asynchronous copies on CUDA).
        workers: loader processes (0: decode in this process).
        prefetch: chunks decoded ahead per worker.
    """

    def __init__(self, dataset, order, plan: Plan, rank: int, world: int, device: torch.device, workers: int,
                 prefetch: int = PREFETCH_CHUNKS) -> None:
        self.dataset, self.order, self.plan, self.rank, self.world = dataset, order, plan, rank, world
        self.device, self.workers, self.prefetch = torch.device(device), int(workers), int(prefetch)
        self.restarts = 0
        self._sampler: ChunkSampler | None = None
        self._it: Iterator | None = None

    def _start(self, nimg: int, first_round: int) -> None:
        self.close()
        self._sampler = ChunkSampler(self.order, self.plan, nimg, first_round, self.rank, self.world)
        extra = {"prefetch_factor": self.prefetch, "persistent_workers": False,
                 "worker_init_fn": _ignore_stop_signals} if self.workers > 0 else {}
        loader = DataLoader(self.dataset, batch_sampler=self._sampler, num_workers=self.workers,
                            collate_fn=_collate, pin_memory=self.device.type == "cuda", **extra)
        self._it = iter(loader)
        self.restarts += 1

    def get(self, nimg: int, chunk: int, batch_gpu: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] (float32 ``[batch_gpu, C, H, W]`` on the device) and labels of chunk ``chunk``
        (``round * world + rank``) of the minibatch starting at ``nimg``."""
        key = (nimg + chunk * batch_gpu, batch_gpu)
        while True:
            fresh = self._it is None
            if fresh:
                self._start(nimg, chunk // self.world)
            img, c = next(self._it)
            got = self._sampler.keys.popleft()
            if got == key:
                break
            if fresh:
                raise RuntimeError(f"The data plan gives chunk {got} where the loop reads {key}: the plan must "
                                   "return the minibatch split the loop uses.")
            if got[0] >= key[0] or got[1] != batch_gpu:  # not on the plan: restart at the wanted chunk
                self.close()
        non_blocking = self.device.type == "cuda"
        img = img.to(self.device, non_blocking=non_blocking).to(torch.float32) / 127.5 - 1
        return img, c.to(self.device, non_blocking=non_blocking)

    def close(self) -> None:
        """Stop the loader's worker processes (a later :meth:`get` starts new ones)."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

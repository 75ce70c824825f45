"""``--batch-gpu auto``: the largest per-process batch that fits the memory, and one halving on out-of-memory.

Before training, :func:`resolve_batch_gpu` runs probe steps of the real recipe (every loss of every phase, so the
StyleGAN R1 double backward and the path-length regulariser are included; no optimiser step) at a few per-process
batch sizes and keeps the largest that fits:

- CUDA: the peak of ``torch.cuda.max_memory_allocated`` during a probe must stay below what was allocated before
  plus ``1 - CUDA_MARGIN`` of the free memory (``torch.cuda.mem_get_info``); an out-of-memory error means "no".
- CPU: the peak resident set size of the process (sampled from ``/proc/self/statm`` while the probe runs) must stay
  below the RSS before the probe plus ``mem_share`` (``--mem-share``) of the available memory (``MemAvailable``
  of ``/proc/meminfo``, or the cgroup limit when lower).

Candidates are the divisors of the process's share of the global batch (the global batch is kept: smaller chunks
accumulate gradients over rounds). Two small probes give a linear model of the peak in the batch size; the
largest candidate it predicts to fit is probed, then smaller ones until one fits. The networks, optimisers, loss
buffers and ADA state are restored afterwards, and the probe runs on a forked RNG, so probing changes nothing
but the chosen ``batch_gpu``.

During training, :func:`run_phase_halving_on_oom` catches an out-of-memory error in a phase, halves the
per-process batch once (logged), reruns that phase and continues; a second one stops the run with the advice.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from styleforge.utils.errors import UserInputError

__all__ = ["CUDA_MARGIN", "resolve_batch_gpu", "batch_candidates", "run_phase_halving_on_oom", "ProbeResult"]

#: share of the free CUDA memory left unused by the chosen batch (fragmentation, metrics, grids)
CUDA_MARGIN = 0.10
#: how often the CPU probe samples the resident set size
RSS_SAMPLE_S = 0.002


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """One probe: the per-process batch, its peak memory in bytes, and whether it fitted (``None``: OOM)."""

    batch_gpu: int
    peak: int | None
    fits: bool


def batch_candidates(batch: int, world: int, min_batch_gpu: int = 1) -> list[int]:
    """Per-process batch sizes that split ``batch`` evenly over ``world`` processes, ascending."""
    share = batch // world
    if share < 1 or batch % world:
        raise UserInputError(f"--batch ({batch}) must be a multiple of the number of processes ({world}).")
    out = [d for d in range(1, share + 1) if share % d == 0 and d >= min_batch_gpu]
    return out or [share]


# ------------------------------------------------------------------------------------------------------------
# Memory readings.


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def available_memory_bytes() -> int:
    """Memory this process may still take on a CPU: ``MemAvailable``, or the cgroup's remaining limit if lower."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file, encoding="ascii") as f:
                text = f.read().strip()
            with open(usage_file, encoding="ascii") as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if text.isdigit() and int(text) < 1 << 60:
            left = max(int(text) - used, 0)
            avail = left if avail is None else min(avail, left)
    if avail is None:
        raise UserInputError("--batch-gpu auto on a CPU needs /proc/meminfo to know the free memory; give a number.")
    return avail


class _RssPeak:
    """Context manager sampling the process's RSS in a thread; ``peak`` holds the maximum seen."""

    def __enter__(self) -> _RssPeak:
        self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(RSS_SAMPLE_S)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _is_oom(err: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(err, oom) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


# ------------------------------------------------------------------------------------------------------------
# Probing.


def _cpu_copy(obj: Any) -> Any:
    """A copy of a (nested) state dict with every tensor cloned to the host."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


def _probe_step(recipe: Any, ds: Any, batch: int, batch_gpu: int, world: int, device: torch.device) -> None:
    """Forward and backward of every loss of every phase on one synthetic chunk of ``batch_gpu`` images."""
    from styleforge.training.engine import Chunk, Minibatch

    mb = Minibatch(0, 0, batch, batch_gpu, batch // (batch_gpu * world))
    c, h, w = ds.image_shape
    labels = torch.stack([torch.from_numpy(ds.get_label(i % ds.num_images)) for i in range(batch_gpu)]).to(device)
    reals = torch.rand(batch_gpu, c, h, w, device=device) * 2 - 1
    chunk = Chunk(0, reals, labels, torch.randn(batch_gpu, recipe.G.z_dim, device=device), labels)
    for phase in recipe.phases:
        recipe.G.requires_grad_(phase.module is recipe.G)
        recipe.D.requires_grad_(phase.module is recipe.D)
        for name in phase.losses:
            recipe.accumulate(name, chunk, mb, phase.interval)
        phase.module.zero_grad(set_to_none=True)
    recipe.G.requires_grad_(False)
    recipe.D.requires_grad_(False)


def _measure(recipe: Any, ds: Any, batch: int, batch_gpu: int, world: int, device: torch.device,
             budget: int) -> ProbeResult:
    """Peak memory of one probe step at ``batch_gpu`` and whether it stays within ``budget`` bytes."""
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            _probe_step(recipe, ds, batch, batch_gpu, world, device)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
        else:
            with _RssPeak() as rss:
                _probe_step(recipe, ds, batch, batch_gpu, world, device)
            peak = rss.peak
    except Exception as e:
        if not _is_oom(e):
            raise
        for net in (recipe.G, recipe.D):
            net.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return ProbeResult(batch_gpu, None, False)
    return ProbeResult(batch_gpu, int(peak), peak <= budget)


def _budget(device: torch.device, mem_share: float) -> tuple[int, str]:
    """``(bytes the probe's peak may reach, how it was derived)``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        base = torch.cuda.memory_allocated(device)
        budget = base + int(free * (1 - CUDA_MARGIN))
        return budget, f"{base / 2**30:.2f} GiB allocated + {1 - CUDA_MARGIN:.0%} of {free / 2**30:.2f} GiB free"
    base, avail = _rss_bytes(), available_memory_bytes()
    budget = base + int(avail * mem_share)
    return budget, f"RSS {base / 2**30:.2f} GiB + {mem_share:.0%} of {avail / 2**30:.2f} GiB available"


def choose_batch_gpu(candidates: list[int], measure: Callable[[int], ProbeResult],
                     budget: int) -> tuple[int, list[ProbeResult]]:
    """The largest candidate that fits ``budget`` bytes, found with few probes; ``measure(b)`` runs one probe.

    Probes the two smallest candidates, predicts the peak of the others linearly from them, probes the largest
    predicted to fit and goes down until a probe fits. Returns ``(choice, probes)``; the smallest candidate is
    returned (with its failed probe) when nothing fits.
    """
    done: dict[int, ProbeResult] = {}

    def probe(b: int) -> ProbeResult:
        if b not in done:
            done[b] = measure(b)
        return done[b]

    first = probe(candidates[0])
    if not first.fits:
        return candidates[0], list(done.values())
    start = len(candidates) - 1
    if len(candidates) > 1:
        second = probe(candidates[1])
        if not second.fits:
            return candidates[0], list(done.values())
        slope = max((second.peak - first.peak) / (candidates[1] - candidates[0]), 0.0)
        if slope > 0:
            fitting = [i for i, b in enumerate(candidates) if first.peak + slope * (b - candidates[0]) <= budget]
            start = max(fitting, default=1)
    for i in range(start, -1, -1):
        if probe(candidates[i]).fits:
            return candidates[i], list(done.values())
    return candidates[0], list(done.values())


def resolve_batch_gpu(cfg: Any, recipe: Any, ds: Any, dist_ctx: Any, log: Callable[[str], None]) -> Any:
    """``cfg`` with ``batch_gpu="auto"`` replaced by the largest per-process batch that fits (see the module doc).

    Other values are returned unchanged. Every process probes; the smallest choice over the processes is used.
    """
    if cfg.batch_gpu != "auto":
        return cfg
    if getattr(cfg, "progressive", None) is not None:
        raise UserInputError(
            "--batch-gpu auto probes one network size, but PGGAN grows (its memory need changes at every stage); "
            "give --batch-gpu a number (e.g. 8)."
        )
    device = dist_ctx.device
    world = dist_ctx.world_size
    batch = recipe.minibatch_size(0)
    pl = getattr(cfg.loss, "pl_weight", 0) > 0
    candidates = batch_candidates(batch, world, cfg.loss.pl_batch_shrink if pl else 1)
    saved = _cpu_copy(recipe.state_dict())
    budget, how = _budget(device, cfg.mem_share)

    def measure(b: int) -> ProbeResult:
        return _measure(recipe, ds, batch, b, world, device, budget)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        choice, probes = choose_batch_gpu(candidates, measure, budget)
    recipe.load_state_dict(saved)
    for net in (recipe.G, recipe.D):
        net.zero_grad(set_to_none=True)
    if dist_ctx.distributed:
        choice = int(min(dist_ctx.all_gather_object(choice)))
    shown = ", ".join(f"{p.batch_gpu}: " + ("out of memory" if p.peak is None else f"{p.peak / 2**30:.3f} GiB")
                      for p in sorted(probes, key=lambda p: p.batch_gpu))
    fitted = any(p.fits and p.batch_gpu == choice for p in probes)
    rounds = batch // (choice * world)
    log(f"--batch-gpu auto: {choice} images per forward pass and process ({rounds} round(s) of gradient "
        f"accumulation for the batch of {batch} over {world} process(es)); probe peaks {shown}; budget "
        f"{budget / 2**30:.3f} GiB = {how}" + ("" if fitted else "; even the smallest batch exceeds it"))
    return dataclasses.replace(cfg, batch_gpu=choice)


# ------------------------------------------------------------------------------------------------------------
# Out of memory during training.


def run_phase_halving_on_oom(engine: Any, phase: Any, mb: Any, reals: dict, bad: torch.Tensor) -> Any:
    """``engine.run_phase(...)``; on the first out-of-memory error, halve ``batch_gpu`` and rerun the phase.

    Returns the minibatch split the phase ran with (the halved one after a halving; the later phases and
    minibatches use it too). The new ``batch_gpu`` is stored in the engine's config, so that the training
    state and a resumed run continue with it.
    """
    try:
        engine.run_phase(phase, mb, reals, bad)
        return mb
    except Exception as e:
        if not _is_oom(e):
            raise
        error = e
    phase.opt.zero_grad(set_to_none=True)
    engine.recipe.G.requires_grad_(False)
    engine.recipe.D.requires_grad_(False)
    reals.clear()
    if engine.dev.type == "cuda":
        torch.cuda.empty_cache()
    share = mb.batch // engine.dist.world_size
    smaller = [d for d in batch_candidates(mb.batch, engine.dist.world_size) if d <= mb.batch_gpu // 2]
    if getattr(engine, "_oom_halved", False) or not smaller or engine.dist.world_size > 1:
        why = ("after halving once already" if getattr(engine, "_oom_halved", False) else
               "with several processes (they must agree on the split)" if engine.dist.world_size > 1 else
               "at one image per pass")
        raise _oom_error(phase.name, mb.batch_gpu, why, error)
    new = max(smaller)
    engine._oom_halved = True
    engine.cfg = dataclasses.replace(engine.cfg, batch_gpu=new)
    engine.log(f"out of memory in phase {phase.name} at kimg {engine.n.cur_nimg / 1000:.3f} with --batch-gpu "
               f"{mb.batch_gpu}: halving it to {new} ({share // new} rounds per minibatch) and continuing; the "
               "global batch stays " + str(mb.batch))
    new_mb = engine.split(mb.batch)
    try:
        engine.run_phase(phase, new_mb, reals, bad)
    except Exception as e:
        if not _is_oom(e):
            raise
        raise _oom_error(phase.name, new, "after halving once already", e) from None
    return new_mb


def _oom_error(phase: str, batch_gpu: int, why: str, error: BaseException) -> UserInputError:
    return UserInputError(
        f"Out of memory in phase {phase} at --batch-gpu {batch_gpu} {why}. Resume with a smaller --batch-gpu "
        f"(e.g. {max(batch_gpu // 2, 1)}) or --batch-gpu auto and --allow-change batch-gpu, or use a smaller "
        f"network (--cbase). ({str(error).splitlines()[0][:200]})"
    )

"""The training engine shared by every recipe (StyleGAN2/3, PGGAN, and the loops to come).

The engine owns what every GAN loop has: the run directory (numbering, ``config.json``, ``log.txt``), resume and
its validation against the saved configuration, the split of a global minibatch into rounds and processes, the
phase loop (zero grads, accumulate over chunks, all-reduce, sanitise, step), ticks with the progress line, tqdm
bar and ETA, ``stats.jsonl`` and TensorBoard, fixed-seed grids, snapshots, metrics at snapshots, the non-finite
policy and the randomness. A recipe (:class:`Recipe`) only says which networks and optimisers exist, what each
phase computes on one chunk, and what extra state it saves.

Minibatches, rounds, processes: one iteration processes one global minibatch of ``batch`` images, cut into
``batch / batch_gpu`` chunks; process ``rank`` handles chunks ``rank, rank + world, ...`` (one per round,
gradients accumulated).

Randomness: :func:`train` never reseeds the caller's generators: it runs inside ``torch.random.fork_rng``, which
restores them on exit. Every random number of a chunk (latents, labels, style mixing, noise inputs, augmentation)
comes from the torch generator seeded from ``(seed, minibatch, phase, chunk)``, and the real images of a chunk
are fixed by the seed and the image counter, so a run is a function of its config and counters: resuming gives
bit-identical weights, and N processes equal one process with the same ``batch`` and ``batch_gpu`` (up to float
summation order in the gradient all-reduce, and with the recipe's process-independent options).

Non-finite values (official policy): gradients are sanitised (NaN -> 0, +-inf -> +-1e5) and training goes on; the
run stops with :class:`NonFiniteLossError` only when the losses stay non-finite for ``nonfinite_patience``
consecutive minibatches. One overflow (fp16 on a GPU) is survived.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn

import styleforge
from styleforge.data import ImageDataset, open_dataset
from styleforge.training.checkpoint import (
    DEFAULT_KEEP_STATES,
    STATE_FILE,
    STATE_FORMAT_VERSION,
    disk_full_guard,
    find_latest_run,
    load_latest_state,
    load_training_state,
    remove_stale_temporaries,
    save_rotated_state,
    state_files,
    state_nbytes,
)
from styleforge.training.config import SCHEDULE_FIELDS, TrainConfig, apply_transfer_defaults, train_config_from_dict
from styleforge.training.data_stream import RealStream, default_workers
from styleforge.training.distributed import DistContext, init_from_env
from styleforge.training.memory_fit import resolve_batch_gpu, run_phase_halving_on_oom
from styleforge.utils.errors import StyleforgeError, UserInputError
from styleforge.utils.heap import retained_heap
from styleforge.utils.images import make_grid, save_png, to_uint8
from styleforge.utils.io import atomic_write_bytes, atomic_write_json
from styleforge.utils.seeding import z_from_seed

__all__ = [
    "Phase",
    "Chunk",
    "Minibatch",
    "Recipe",
    "TrainResult",
    "NonFiniteLossError",
    "run_training",
    "resume_differences",
    "run_description",
]

#: Columns of the fixed-seed progress grid.
GRID_COLS = 8
#: Config field -> the CLI flag that sets it (for resume messages).
FLAG_OF_FIELD = {
    "cfg": "--cfg", "model": "--cfg", "data": "--data", "resolution": "--resolution", "cond": "--cond",
    "mirror": "--mirror", "skip_bad": "--skip-bad", "batch": "--batch", "batch_gpu": "--batch-gpu",
    "seed": "--seed", "freezed": "--freezed", "g_opt.lr": "--glr", "d_opt.lr": "--dlr", "loss.r1_gamma": "--gamma",
    "augment.mode": "--aug", "augment.p": "--p", "augment.target": "--target", "augment.pipeline": "--aug-pipe",
    "mixed_precision": "--fp32", "progressive.schedule.growing": "--no-growing", "kimg": "--kimg",
    "tick_kimg": "--tick", "snap": "--snap", "metrics": "--metrics", "ops_impl": "--ops-impl",
    "cond_encoding": "--cond", "mem_share": "--mem-share", "xl.kimg_per_stage": "--kimg-per-stage",
    "xl.stages": "--stages", "xl.cls_weight": "--cls-weight", "xl.class_embedding": "--class-embedding",
    "xl.hinge_reduction": "--hinge-reduction", "xl.d_feature_resolution": "--d-feature-res",
    "xl.advance_on_plateau": "--advance-on-plateau", "xl.plateau_patience": "--plateau-patience",
}


class NonFiniteLossError(StyleforgeError):
    """The losses stayed NaN or infinite; training stops and the last good snapshot is kept."""


@dataclass
class Phase:
    """One optimiser step: the losses it accumulates, every ``interval`` minibatches, with gain ``interval``."""

    name: str
    module: nn.Module
    opt: torch.optim.Optimizer
    interval: int = 1
    index: int = 0  # part of the chunk seed: keep it fixed for a phase across versions
    losses: tuple[str, ...] = ()
    needs_reals: bool = True


@dataclass
class Minibatch:
    """Where the loop is: the global minibatch and its split."""

    index: int  # minibatches done before this one
    cur_nimg: int  # images shown before this one
    batch: int  # global minibatch size
    batch_gpu: int  # images per chunk
    num_rounds: int


@dataclass
class Chunk:
    """The inputs of one forward pass of one process: real images in [-1, 1] and labels, latents and labels."""

    index: int
    real_img: torch.Tensor | None
    real_c: torch.Tensor | None
    gen_z: torch.Tensor
    gen_c: torch.Tensor


class Recipe(Protocol):
    """What a training recipe provides to the engine (see :mod:`styleforge.training.stylegan`).

    Optional hooks, called when a recipe has them: ``prepare_fresh_run(run_dir, dist_ctx) -> list[str]`` (a new run,
    before the networks are broadcast; returns log lines) and ``observe_metric(name, result)`` (each metric
    computed at a snapshot, on the main process).
    """

    kind: str  # written to the state; a state is resumed only by the recipe of its kind
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    phases: list[Phase]

    def minibatch_size(self, cur_nimg: int) -> int: ...
    def begin_minibatch(self, mb: Minibatch) -> list[str]: ...  # returns log lines (e.g. a new growth phase)
    def accumulate(self, loss: str, chunk: Chunk, mb: Minibatch, gain: int) -> dict[str, torch.Tensor]: ...
    def finish_phase(self, phase: Phase, dist_ctx: DistContext) -> None: ...
    def end_minibatch(self, mb: Minibatch, dist_ctx: DistContext) -> None: ...
    def milestone(self, before: int, after: int) -> str | None: ...  # a name when a stage ends (grid + snapshot)
    def tick_values(self) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def load_weights(self, path: str) -> None: ...
    def render(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor: ...  # images at the final resolution
    def metric_generator(self) -> nn.Module: ...
    def snapshot_extra(self) -> dict[str, Any]: ...


@dataclass
class TrainResult:
    """What :func:`run_training` did."""

    run_dir: Path
    cur_nimg: int
    cur_tick: int
    wall_time: float
    sec_per_kimg: float
    final_snapshot: Path | None
    stats: list[dict[str, Any]]
    changes: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped early by Ctrl-C or SIGTERM (with a final snapshot and training state)
    stop_signal: int | None = None  # the signal that stopped this process (None: none, or another rank's vote)


def run_description(cfg: TrainConfig, dataset_name: str, world: int) -> str:
    """The run directory name after its number: ``<cfg>-<data>-gpus<N>-batch<B>[-gamma<G>]``."""
    desc = f"{cfg.cfg}-{dataset_name}-gpus{world}-batch{cfg.batch if cfg.batch is not None else 'sched'}"
    return desc + (f"-gamma{cfg.loss.r1_gamma:g}" if cfg.loss is not None and cfg.xl is None else "")  # XL: no R1


def new_run_dir(outdir: Path, desc: str) -> Path:
    """``outdir/NNNNN-desc`` with the next free number (created)."""
    outdir.mkdir(parents=True, exist_ok=True)
    ids = [int(d.name.split("-", 1)[0]) for d in outdir.iterdir() if d.is_dir() and d.name.split("-", 1)[0].isdigit()]
    run_dir = outdir / f"{max(ids, default=-1) + 1:05d}-{desc}"
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def chunk_seed(seed: int, batch_idx: int, phase_idx: int, chunk: int) -> int:
    """Seed of one chunk's random numbers, independent of how chunks are spread over processes."""
    return int(np.random.SeedSequence([seed, batch_idx, phase_idx, chunk]).generate_state(1, np.uint64)[0] >> 1)


class DataOrder:
    """Global order of dataset items: a fresh seeded permutation per epoch; position k of the infinite stream."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, np.arange(0)

    def indices(self, start: int, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        for j in range(count):
            epoch, pos = divmod(start + j, self.n)
            if epoch != self._epoch:
                self._perm = np.random.default_rng([self.seed, epoch, 0x5F3759DF]).permutation(self.n)
                self._epoch = epoch
            out[j] = self._perm[pos]
        return out


def fmt_time(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s // 60) % 60:02d}m"


# ------------------------------------------------------------------------------------------------------------
# Resume: which state, and is the new configuration the same run?


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "model_overrides":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.loads(json.dumps(v))  # tuples and lists compare equal
    return out


def resume_differences(saved: TrainConfig, new: TrainConfig) -> tuple[dict[str, tuple[Any, Any]], list[str]]:
    """``(run-changing differences {field: (saved, new)}, schedule fields that changed)`` between two configs."""
    a, b = _flatten(saved.to_dict()), _flatten(new.to_dict())
    diffs = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    schedule = [k for k in diffs if k in SCHEDULE_FIELDS]
    return {k: v for k, v in diffs.items() if k not in SCHEDULE_FIELDS}, schedule


def _flag_matches(field_name: str, allowed: set[str]) -> bool:
    flag = FLAG_OF_FIELD.get(field_name, "").lstrip("-")
    return field_name in allowed or field_name.split(".")[0] in allowed or (flag and flag in allowed)


def check_resume(run_dir: Path, saved: TrainConfig, new: TrainConfig, allow_change: tuple[str, ...]) -> list[str]:
    """Refuse a resume whose configuration changes the run; returns log lines for the accepted changes."""
    allowed = {a.lstrip("-").replace("_", "-") for a in allow_change} | set(allow_change)
    diffs, schedule = resume_differences(saved, new)
    refused = {k: v for k, v in diffs.items() if not _flag_matches(k, allowed)}
    if refused:
        parts = [f"{FLAG_OF_FIELD.get(k, k)} ({k}): saved {v[0]!r}, now {v[1]!r}" for k, v in refused.items()]
        names = sorted({FLAG_OF_FIELD.get(k, k).lstrip("-") for k in refused})
        raise UserInputError(
            f"Cannot resume {run_dir}: these options differ from the run's saved configuration: " + "; ".join(parts)
            + ". Resume with the saved options (leave these flags out), start a new run (without --resume), or "
            "force the change with " + " ".join(f"--allow-change {n}" for n in names) + "."
        )
    lines = [f"changed on resume: {FLAG_OF_FIELD.get(k, k)} ({k}) {v[0]!r} -> {v[1]!r}" for k, v in diffs.items()]
    a, b = _flatten(saved.to_dict()), _flatten(new.to_dict())
    lines += [f"changed on resume: {FLAG_OF_FIELD.get(k, k)} {a.get(k)!r} -> {b.get(k)!r}" for k in schedule]
    return lines


def locate_resume(resume: str | None, outdir: str) -> tuple[dict[str, Any] | None, Path | None, str | None]:
    """``(training state, its run directory, network to initialise from)`` for a ``--resume`` value."""
    if resume is None:
        return None, None, None
    if resume == "latest":
        run_dir = find_latest_run(outdir)
        return load_latest_state(run_dir)[0], run_dir, None
    rp = Path(resume).expanduser()
    if rp.is_dir() and ((rp / STATE_FILE).is_file() or state_files(rp)):
        return load_latest_state(rp)[0], rp, None
    if rp.is_file() and rp.suffix == ".pt":
        return load_training_state(rp), rp.parent, None
    return None, None, resume


def saved_config(state: dict[str, Any], where: Path) -> TrainConfig:
    """The configuration stored in a training state."""
    if state.get("format_version", 1) < STATE_FORMAT_VERSION and state.get("kind") == "progressive":
        raise UserInputError(
            f"{where} was written by the PGGAN loop of styleforge 0.1, whose state cannot be resumed exactly by "
            "this version. Start a new run from its network snapshot (--resume network-snapshot-...)."
        )
    return train_config_from_dict(state["config"])


# ------------------------------------------------------------------------------------------------------------
# The run


@contextmanager
def _own_randomness(device: torch.device, seed: int) -> Iterator[None]:
    """Run with the global torch generators forked (the caller's states are restored afterwards)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _Log:
    """Progress lines to the console (or tqdm, or a callback) and to ``log.txt``; stats to JSONL/TensorBoard."""

    def __init__(self, run_dir: Path, is_main: bool, log: Callable[[str], None] | None) -> None:
        self.run_dir, self.is_main, self.callback = run_dir, is_main, log
        self.bar = None
        self.tb = None

    def open(self, total_kimg: int, start_kimg: int, progress_bar: bool | None) -> None:
        if not self.is_main:
            return
        want_bar = progress_bar if progress_bar is not None else sys.stderr.isatty()
        if want_bar and self.callback is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total_kimg, initial=start_kimg, unit="kimg", dynamic_ncols=True, leave=False)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir))
        except ImportError:
            self.tb = None

    def __call__(self, msg: str) -> None:
        if not self.is_main:
            return
        if self.callback is not None:
            self.callback(msg)
        elif self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)
        with open(self.run_dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(msg + "\n")

    def progress(self, cur_nimg: int) -> None:
        if self.bar is not None:
            self.bar.n = cur_nimg // 1000
            self.bar.refresh()

    def record(self, record: dict[str, Any], cur_nimg: int) -> None:
        if not self.is_main:
            return
        with open(self.run_dir / "stats.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and v is not None and k not in ("tick", "kimg"):
                    self.tb.add_scalar(k, v, global_step=cur_nimg // 1000)
            self.tb.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


@dataclass
class _Counters:
    cur_nimg: int = 0
    cur_tick: int = 0
    batch_idx: int = 0
    tick_start_nimg: int = 0
    nonfinite_streaks: dict[str, int] = field(default_factory=dict)


class _Engine:
    """One run: set up by :func:`run_training`, then :meth:`loop`."""

    def __init__(self, cfg: TrainConfig, recipe: Recipe, ds: ImageDataset, run_dir: Path, dist_ctx: DistContext,
                 log: _Log) -> None:
        self.cfg, self.recipe, self.ds, self.run_dir, self.dist, self.log = cfg, recipe, ds, run_dir, dist_ctx, log
        self.dev = dist_ctx.device
        self.n = _Counters()
        self.order = DataOrder(len(ds), cfg.seed)
        self.stream = _real_stream(self)
        num_phase_slots = max(p.index for p in recipe.phases) + 1
        # Per phase slot, on the device: non-finite minibatches in a row now, most in a row this tick, count.
        self._nonfinite = torch.zeros(3, num_phase_slots, dtype=torch.float64, device=self.dev)
        self._ran_masks: dict[tuple[int, ...], torch.Tensor] = {}
        self.total_nimg = int(round(cfg.kimg * 1000))
        self.tick_stats: dict[str, torch.Tensor] = {}
        self.records: list[dict[str, Any]] = []
        self.final_snapshot: Path | None = None
        self.sec_per_kimg = float("nan")
        self.t_start = time.time()
        self.tick_start_time = time.time()
        self.maintenance = 0.0
        self.keep_states = DEFAULT_KEEP_STATES  # training states kept (--keep-states)
        self.stop_requested = False  # set by the first Ctrl-C/SIGTERM: stop after this minibatch with a snapshot
        self.stop_signal: int | None = None  # which of the two it was
        self._stop_local = False  # this process saw a Ctrl-C (its vote, under several processes)
        self._stop_votes: collections.deque = collections.deque()  # votes started, not yet read
        labels = [ds.get_label(i) for i in range(ds.num_images)] if ds.has_labels else []
        self.label_table = torch.from_numpy(np.stack(labels)).to(self.dev) if labels else \
            torch.zeros(ds.num_images, 0, device=self.dev)
        self.grid_z = torch.cat([z_from_seed(s, recipe.G.z_dim) for s in range(cfg.grid_size)]).to(self.dev)
        self.grid_c = torch.zeros(cfg.grid_size, recipe.G.c_dim, device=self.dev)
        if recipe.G.c_dim > 0:
            self.grid_c[torch.arange(cfg.grid_size), torch.arange(cfg.grid_size) % recipe.G.c_dim] = 1
        if getattr(ds, "label_encoding", None) in ("multi-label", "continuous"):  # labels as found in the data
            self.grid_c = self.label_table[torch.arange(cfg.grid_size, device=self.dev) % ds.num_images].clone()

    # -- one minibatch --

    def split(self, batch: int) -> Minibatch:
        world = self.dist.world_size
        batch_gpu = self.cfg.batch_gpu or batch // world
        if batch_gpu < 1 or batch % (batch_gpu * world) != 0:
            raise UserInputError(
                f"The minibatch ({batch}) must be a multiple of --batch-gpu ({self.cfg.batch_gpu}) x processes "
                f"({world}).")
        return Minibatch(self.n.batch_idx, self.n.cur_nimg, batch, batch_gpu, batch // (batch_gpu * world))

    def load_reals(self, mb: Minibatch, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunk ``chunk`` of the minibatch: positions ``cur_nimg + chunk * batch_gpu ...`` of the seeded order,
        decoded ahead by the loader's workers (:mod:`styleforge.training.data_stream`)."""
        return self.stream.get(mb.cur_nimg, chunk, mb.batch_gpu)

    def plan(self, nimg: int) -> tuple[int, int, int]:
        """``(batch, batch_gpu, rounds)`` of the minibatch that starts at image ``nimg`` (for the loader)."""
        mb = self.split(self.recipe.minibatch_size(nimg))
        return mb.batch, mb.batch_gpu, mb.num_rounds

    def run_phase(self, phase: Phase, mb: Minibatch, reals: dict[int, tuple[torch.Tensor, torch.Tensor]],
                  bad: torch.Tensor) -> None:
        G, D = self.recipe.G, self.recipe.D
        G.requires_grad_(phase.module is G)
        D.requires_grad_(phase.module is D)
        phase.opt.zero_grad(set_to_none=True)
        for r in range(mb.num_rounds):
            index = r * self.dist.world_size + self.dist.rank
            if phase.needs_reals and index not in reals:
                reals[index] = self.load_reals(mb, index)
            real_img, real_c = reals[index] if phase.needs_reals else (None, None)
            torch.manual_seed(chunk_seed(self.cfg.seed, mb.index, phase.index, index))
            gen_z = torch.randn(mb.batch_gpu, G.z_dim, device=self.dev)
            gen_c = self.label_table[torch.randint(self.ds.num_images, (mb.batch_gpu,), device=self.dev)]
            chunk = Chunk(index, real_img, real_c, gen_z, gen_c)
            for name in phase.losses:
                for k, v in self.recipe.accumulate(name, chunk, mb, phase.interval).items():
                    self.tick_stats[k] = self.tick_stats.get(k, 0) + v.detach().double()
                    if k.startswith("loss/"):
                        bad[phase.index] += (~torch.isfinite(v.detach())).any().double()
        params = [p for p in phase.module.parameters() if p.requires_grad]
        self.dist.all_reduce_grads(params)
        for p in params:
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        phase.opt.step()
        self.recipe.finish_phase(phase, self.dist)

    def minibatch(self) -> None:
        mb = self.split(self.recipe.minibatch_size(self.n.cur_nimg))
        for line in self.recipe.begin_minibatch(mb):
            self.log(line)
        reals: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        bad = torch.zeros(max(p.index for p in self.recipe.phases) + 1, dtype=torch.float64, device=self.dev)
        ran = [phase for phase in self.recipe.phases if mb.index % phase.interval == 0]
        for phase in ran:  # an out-of-memory error halves batch_gpu once (styleforge.training.memory_fit)
            mb = run_phase_halving_on_oom(self, phase, mb, reals, bad)
        self.recipe.G.requires_grad_(False)
        self.recipe.D.requires_grad_(False)
        self.recipe.end_minibatch(mb, self.dist)
        self.n.cur_nimg += mb.batch
        self.n.batch_idx += 1
        self.check_finite(self.dist.all_reduce(bad), ran)

    def check_finite(self, bad: torch.Tensor, ran: list[Phase]) -> None:
        """Count, on the device, the minibatches in a row in which each phase's losses were non-finite (over the
        minibatches in which that phase ran, so lazy phases count too); :meth:`read_nonfinite` reads the counts
        once per tick. No host synchronisation here."""
        key = tuple(sorted(phase.index for phase in ran))
        mask = self._ran_masks.get(key)
        if mask is None:  # one small host-to-device copy per combination of phases, the first time only
            mask = torch.zeros_like(bad, dtype=torch.bool)
            mask[list(key)] = True
            self._ran_masks[key] = mask
        hit = (bad > 0) & mask
        streak = self._nonfinite[0]
        streak.copy_(torch.where(mask, torch.where(hit, streak + 1, torch.zeros_like(streak)), streak))
        torch.maximum(self._nonfinite[1], streak, out=self._nonfinite[1])
        self._nonfinite[2] += hit

    def read_nonfinite(self) -> None:
        """Once per tick (before the snapshot): log the phases with non-finite losses in this tick, and stop when
        one of them was non-finite ``nonfinite_patience`` minibatches in a row."""
        streak, worst, count = self._nonfinite.cpu().tolist()
        self._nonfinite[1:].zero_()
        by_name = {p.index: p.name for p in self.recipe.phases}
        for idx, name in by_name.items():
            self.n.nonfinite_streaks[name] = int(streak[idx])
        names = [by_name[i] for i in sorted(by_name) if count[i] > 0]
        if not names:
            return
        worst_idx = max((i for i in by_name if count[i] > 0), key=lambda i: worst[i])
        top = int(worst[worst_idx])
        self.log(f"non-finite loss in phase {', '.join(names)} up to kimg {self.n.cur_nimg / 1000:.3f} "
                 f"({', '.join(f'{by_name[i]}: {int(count[i])}x' for i in sorted(by_name) if count[i] > 0)} in this "
                 f"tick, at most {top} in a row); gradients sanitised")
        if top >= self.cfg.nonfinite_patience:
            last = self.run_dir / STATE_FILE
            kept = f"The last good training state is {last}." if last.is_file() else "No snapshot had been written."
            raise NonFiniteLossError(
                f"Non-finite loss in phase {by_name[worst_idx]} at tick {self.n.cur_tick} (kimg "
                f"{self.n.cur_nimg / 1000:.3f}) {top} times in a row; training stopped. {kept} Lower the learning "
                "rate or --gamma, check the data, or raise nonfinite_patience."
            )

    # -- ticks --

    def tick_record(self) -> dict[str, Any]:
        now = time.time()
        keys = sorted(self.tick_stats)
        vals = self.dist.all_reduce(torch.stack([self.tick_stats[k] for k in keys])).tolist() if keys else []
        totals = dict(zip(keys, vals, strict=True))
        self.tick_stats.clear()
        means = {k[5:] if k.startswith("loss/") else k: totals[k] / max(totals.get("count/" + k[5:], 1.0), 1.0)
                 for k in keys if k.startswith("loss/")}
        means.update({k: totals[k] / max(totals.get("count/" + k, 1.0), 1.0) for k in keys if k.startswith("scores/")})
        tick_kimg = (self.n.cur_nimg - self.n.tick_start_nimg) / 1000
        sec_per_tick = now - self.tick_start_time
        self.sec_per_kimg = sec_per_tick / max(tick_kimg, 1e-9)
        return {"tick": self.n.cur_tick, "kimg": self.n.cur_nimg / 1000, "time_s": now - self.t_start,
                "sec_per_tick": sec_per_tick, "sec_per_kimg": self.sec_per_kimg, "maintenance_s": self.maintenance,
                **self.recipe.tick_values(), **{f"loss/{k}" if "/" not in k else k: v for k, v in means.items()}}

    def progress_line(self, record: dict[str, Any], eta: float) -> str:
        parts = [f"tick {record['tick']:<4d}", f"kimg {record['kimg']:<8.1f}", f"time {fmt_time(record['time_s']):<9s}",
                 f"sec/tick {record['sec_per_tick']:<6.1f}", f"sec/kimg {record['sec_per_kimg']:<7.2f}",
                 f"maint {record['maintenance_s']:<5.1f}"]
        parts += [f"{k[5:]} {v:<7.4f}" for k, v in record.items() if k.startswith("loss/")]
        parts += [f"{k} {v:.4g}" for k, v in self.recipe.tick_values().items() if v is not None]
        return "  ".join(parts + [f"ETA {fmt_time(eta)}"])

    def end_tick(self, done: bool, milestone: str | None, time_limit_s: float | None) -> None:
        self.read_nonfinite()
        record = self.tick_record()
        self.records.append(record)
        eta = (self.total_nimg - self.n.cur_nimg) / 1000 * self.sec_per_kimg
        if time_limit_s is not None:
            eta = min(eta, max(time_limit_s - (time.time() - self.t_start), 0.0))
        self.log(self.progress_line(record, eta))
        maint_start = time.time()
        self.log.record(record, self.n.cur_nimg)
        snap_due = self.cfg.snap > 0 and (self.n.cur_tick + 1) % self.cfg.snap == 0
        if done or snap_due or milestone is not None:
            self.snapshot()
        grid_due = self.cfg.image_snap > 0 and (self.n.cur_tick + 1) % self.cfg.image_snap == 0
        if self.dist.is_main and milestone is not None:
            self.save_grid(f"fakes_{milestone}.png")
        elif self.dist.is_main and (done or grid_due):
            self.save_grid(f"fakes{self.n.cur_nimg // 1000:06d}.png")
        self.n.cur_tick += 1
        self.n.tick_start_nimg = self.n.cur_nimg
        self.maintenance = time.time() - maint_start
        self.tick_start_time = time.time()

    # -- outputs --

    @torch.no_grad()
    def save_grid(self, name: str) -> None:
        b = max(self.cfg.batch_gpu or 8, 1)
        z, c = self.grid_z, self.grid_c
        imgs = [to_uint8(self.recipe.render(z[i : i + b], c[i : i + b])) for i in range(0, len(z), b)]
        save_png(self.run_dir / name, make_grid(np.concatenate(imgs), cols=min(GRID_COLS, len(z))))

    def save_reals(self) -> None:
        idx = np.random.default_rng(0).choice(len(self.ds), size=min(self.cfg.grid_size, len(self.ds)), replace=False)
        imgs = np.stack([self.ds[int(i)][0].transpose(1, 2, 0) for i in idx])
        save_png(self.run_dir / "reals.png", make_grid(imgs, cols=min(GRID_COLS, len(imgs))))

    def state(self) -> dict[str, Any]:
        return {"format_version": STATE_FORMAT_VERSION, "styleforge_version": styleforge.__version__,
                "kind": self.recipe.kind, "config": self.cfg.to_dict(), **self.recipe.state_dict(),
                "cur_nimg": self.n.cur_nimg, "cur_tick": self.n.cur_tick + 1, "batch_idx": self.n.batch_idx,
                "world_size": self.dist.world_size}

    def restore(self, state: dict[str, Any]) -> None:
        try:
            self.recipe.load_state_dict(state)
        except UserInputError:
            raise  # the recipe's own message
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserInputError(
                f"The training state in {self.run_dir} does not fit the networks built for this data and config "
                f"({str(e).splitlines()[0]}). Resume with the same data, resolution and options."
            ) from None
        self.n.cur_nimg, self.n.cur_tick = int(state["cur_nimg"]), int(state["cur_tick"])
        self.n.batch_idx = int(state["batch_idx"])
        self.n.tick_start_nimg = self.n.cur_nimg

    def snapshot(self) -> None:
        if self.dist.is_main:
            from styleforge.loading import save as save_networks
            from styleforge.loading import snapshot_path

            # The network snapshot and its metrics first, the training state last: a run killed in between
            # resumes from the previous state and writes this snapshot and its metrics again, so none is skipped.
            self.final_snapshot = snapshot_path(self.run_dir, self.n.cur_nimg)
            save_networks(self.final_snapshot, G=self.recipe.G, D=self.recipe.D, G_ema=self.recipe.G_ema,
                          extra={"cur_nimg": self.n.cur_nimg, "training_config": self.cfg.cfg, "dataset": self.ds.name,
                                 **self.recipe.snapshot_extra()})
        self.run_metrics()  # on every process, each on its share of the images (rank 0 writes the results)
        if self.dist.is_main:
            save_rotated_state(self.run_dir, self.state(), self.keep_states)
            self.log(f"snapshot {self.final_snapshot.name} and {STATE_FILE} at kimg {self.n.cur_nimg / 1000:g}")
        self.dist.barrier()

    def run_metrics(self) -> None:
        if not self.cfg.metrics or self.stop_requested:  # Ctrl-C: the metrics can be computed later
            return
        from styleforge.metrics.registry import MetricContext, compute_metric

        # The official metrics never x-flip the real images.
        reals = self.ds.unmirrored() if hasattr(self.ds, "unmirrored") else self.ds
        d = self.dist
        for metric in self.cfg.metrics:
            ctx = MetricContext(G=self.recipe.metric_generator(), dataset=reals, device=self.dev,
                                batch_size=self.cfg.batch_gpu or 16, progress=False, rank=d.rank,
                                num_ranks=d.world_size, gather=d.all_gather_object if d.distributed else None)
            res = compute_metric(metric, ctx)
            self.log(f"metric {metric}: {res}")
            observe = getattr(self.recipe, "observe_metric", None)  # optional hook (StyleGAN-XL: plateau rule)
            if observe is not None:
                observe(metric, res)
            if not d.is_main:
                continue
            with open(self.run_dir / f"metric-{metric}.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"kimg": self.n.cur_nimg / 1000, "snapshot": self.final_snapshot.name,
                                    "results": res}) + "\n")

    # -- the loop --

    def loop(self, time_limit_s: float | None) -> None:
        done = self.n.cur_nimg >= self.total_nimg
        while not done:
            before = self.n.cur_nimg
            self.minibatch()
            self.log.progress(self.n.cur_nimg)
            milestone = self.recipe.milestone(before, self.n.cur_nimg)
            done = self.n.cur_nimg >= self.total_nimg or (
                time_limit_s is not None and time.time() - self.t_start >= time_limit_s) or _interrupted(self)
            if done or milestone is not None or self.n.cur_nimg >= self.n.tick_start_nimg + self.cfg.tick_kimg * 1000:
                self.end_tick(done, milestone, time_limit_s)


def run_training(
    cfg: TrainConfig,
    make_recipe: Callable[[TrainConfig, ImageDataset, torch.device], Recipe],
    *,
    run_dir: str | Path | None = None,
    resume: str | None = None,
    allow_change: tuple[str, ...] = (),
    dataset: ImageDataset | None = None,
    dist_ctx: DistContext | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
    progress_bar: bool | None = None,
    time_limit_s: float | None = None,
    keep_states: int = DEFAULT_KEEP_STATES,
) -> TrainResult:
    """Run a recipe to ``cfg.kimg``; see :func:`styleforge.training.loop.train` for the arguments."""
    if dist_ctx is None:  # joined here (torchrun's environment), so left here too
        dist_ctx = init_from_env(device)
        try:
            result = run_training(cfg, make_recipe, run_dir=run_dir, resume=resume, allow_change=allow_change,
                                  dataset=dataset, dist_ctx=dist_ctx, log=log, progress_bar=progress_bar,
                                  time_limit_s=time_limit_s, keep_states=keep_states)
        except BaseException as e:
            _report_to_launcher(e)
            dist_ctx.shutdown(barrier=False)  # the other ranks may not reach a barrier now
            raise
        dist_ctx.shutdown()
        return result
    state, state_dir, weights_from = locate_resume(resume, cfg.outdir)
    if state is not None:
        run_dir = state_dir
        saved = saved_config(state, state_dir)
        if state.get("kind", "stylegan") != _recipe_kind(cfg):
            raise UserInputError(f"{state_dir} holds a {state.get('kind')} run; it cannot be resumed as {cfg.cfg}.")
    elif weights_from is not None:
        cfg = apply_transfer_defaults(cfg, weights_from)
    ds = dataset if dataset is not None else _open_training_data(cfg, dist_ctx, log)
    if cfg.cond and not ds.has_labels:
        raise UserInputError(f"--cond is on but the dataset {ds.name!r} has no labels; turn it off.")
    changes = check_resume(state_dir, saved, cfg, allow_change) if state is not None else []
    if run_dir is None:
        name = new_run_dir(Path(cfg.outdir), run_description(cfg, ds.name, dist_ctx.world_size)) \
            if dist_ctx.is_main else None
        run_dir = Path(dist_ctx.all_gather_object(str(name) if name else None)[0])
    run_dir = Path(run_dir)
    if dist_ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if state is None:  # a fresh run starts fresh logs (a resumed one appends)
            for name in ("stats.jsonl", "log.txt"):
                (run_dir / name).unlink(missing_ok=True)
        atomic_write_json(run_dir / "config.json", {"styleforge_version": styleforge.__version__,
                                                    "world_size": dist_ctx.world_size, "train": cfg.to_dict()})
    out = _Log(run_dir, dist_ctx.is_main, log)
    with _own_randomness(dist_ctx.device, cfg.seed), _precision_policy(cfg, dist_ctx.device), \
            retained_heap(None if dist_ctx.device.type == "cpu" else False):
        recipe = make_recipe(cfg, ds, dist_ctx.device)
        cfg = resolve_batch_gpu(cfg, recipe, ds, dist_ctx, out)  # --batch-gpu auto: probe steps
        engine = _Engine(cfg, recipe, ds, run_dir, dist_ctx, out)
        engine.keep_states = keep_states
        if state is not None and dist_ctx.is_main:
            remove_stale_temporaries(run_dir)  # left by a killed write
            trim_replayed_records(run_dir, int(state["cur_nimg"]), out)
        for line in changes:
            out(line)
        with _faults_handled(engine):
            _start(engine, state, weights_from, progress_bar)
            try:
                engine.loop(time_limit_s)
            finally:
                engine.stream.close()
                out.close()
    wall = time.time() - engine.t_start
    out(f"Done: {engine.n.cur_nimg / 1000:.1f} kimg in {fmt_time(wall)}.")
    return TrainResult(run_dir=run_dir, cur_nimg=engine.n.cur_nimg, cur_tick=engine.n.cur_tick, wall_time=wall,
                       sec_per_kimg=engine.sec_per_kimg, final_snapshot=engine.final_snapshot,
                       stats=engine.records, changes=changes, interrupted=engine.stop_requested,
                       stop_signal=engine.stop_signal)


@contextmanager
def _faults_handled(engine: _Engine) -> Iterator[None]:
    """A full disk becomes :class:`DiskFullError` (naming the run directory and the space needed); the first Ctrl-C
    asks the loop to stop after the current minibatch with a snapshot and a training state, a second one exits at
    once (``KeyboardInterrupt``). SIGTERM, which torchrun forwards to every process and cluster schedulers send
    before they preempt a job, is handled the same way; a second SIGTERM terminates at once."""

    def needed() -> int:
        nets = [engine.recipe.G, engine.recipe.D, engine.recipe.G_ema]
        return state_nbytes(engine.state()) + sum(state_nbytes(net.state_dict()) for net in nets)

    def first_interrupt(signum: int, frame: Any) -> None:
        engine.stop_requested = True
        engine.stop_signal = signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    in_main_thread = threading.current_thread() is threading.main_thread()
    handled = (signal.SIGINT, signal.SIGTERM) if in_main_thread else ()
    previous = {signum: signal.signal(signum, first_interrupt) for signum in handled}
    try:
        with disk_full_guard(engine.run_dir, needed):
            yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def trim_replayed_records(run_dir: Path, cur_nimg: int, log: Callable[[str], None]) -> None:
    """Before a resume: drop the records of ``stats.jsonl`` and ``metric-*.jsonl`` beyond ``cur_nimg`` (ticks the
    run is about to replay, written before a kill or by a newer state that was damaged), and a last line cut
    short by a kill, so that every tick is recorded once. ``log.txt`` keeps its history."""
    for path in [run_dir / "stats.jsonl", *sorted(run_dir.glob("metric-*.jsonl"))]:
        if not path.is_file():
            continue
        lines = path.read_bytes().splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
                ok = line.endswith(b"\n") and float(record["kimg"]) * 1000 <= cur_nimg + 0.5
            except (ValueError, KeyError, TypeError):
                ok = False
            if ok:
                kept.append(line)
        if len(kept) < len(lines):
            atomic_write_bytes(path, b"".join(kept))
            log(f"Resuming at kimg {cur_nimg / 1000:g}: {len(lines) - len(kept)} record(s) of {path.name} from "
                "beyond it (or cut short) dropped; those ticks run again.")


def _report_to_launcher(e: BaseException) -> None:
    """Under torchrun, put this process's error in torchrun's error file, so that the job's summary names it as the
    root cause (the other processes are then stopped by torchrun)."""
    if isinstance(e, Exception) and os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(e)


_STOP_VOTE_LAG = 2  # minibatches between a rank's Ctrl-C vote and its reading


def _interrupted(engine: _Engine) -> bool:
    """Whether a Ctrl-C asked the run to stop. With several processes the ranks vote, so that all stop at the same
    minibatch, without a host wait per minibatch: each minibatch starts an all-reduce of the local flag and a
    non-blocking copy of the result to host memory, and reads the vote started ``_STOP_VOTE_LAG`` minibatches
    earlier, which finished long ago (every rank reads the same vote, so all agree)."""
    stop = engine.stop_requested
    if engine.dist.distributed:
        votes = engine._stop_votes
        engine._stop_local = engine._stop_local or stop
        flag = engine.dist.all_reduce(torch.full((1,), 1.0 if engine._stop_local else 0.0, device=engine.dev))
        on_cuda = flag.device.type == "cuda"
        host = torch.empty(1, pin_memory=on_cuda)
        host.copy_(flag, non_blocking=on_cuda)
        event = None
        if on_cuda:
            event = torch.cuda.Event()
            event.record()
        votes.append((host, event))
        stop = False
        if len(votes) > _STOP_VOTE_LAG:
            host, event = votes.popleft()
            if event is not None:
                event.synchronize()  # recorded minibatches ago: waits for nothing still running
            stop = bool(host.numpy()[0] > 0)  # a host tensor: no device read
        engine.stop_requested = stop
    if stop:
        again = "a second SIGTERM" if engine.stop_signal == signal.SIGTERM else "Ctrl-C again"
        engine.log(f"Interrupted at kimg {engine.n.cur_nimg / 1000:g}: writing a snapshot and the training state "
                   f"({again} exits at once, keeping the previous ones).")
    return stop


def _real_stream(engine: _Engine) -> RealStream:
    """The loader of the engine's real images (``cfg.workers`` processes, by default by core count)."""
    cfg, d, ds = engine.cfg, engine.dist, engine.ds
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(d.world_size)))
    workers = cfg.workers if cfg.workers is not None else default_workers(ds.num_images, local_world)
    return RealStream(ds, engine.order, engine.plan, d.rank, d.world_size, engine.dev, workers)


def _open_training_data(cfg: TrainConfig, dist_ctx: DistContext, log: Callable[[str], None] | None) -> ImageDataset:
    """Open the run's dataset. The first process checks every image (once, in worker processes, cached:
    :mod:`styleforge.data.check`); the others then open it from the cached verdicts, decoding nothing."""

    def opener() -> ImageDataset:
        return open_dataset(cfg.data, resolution=cfg.resolution, use_labels=cfg.cond and cfg.cond_encoding,
                            xflip=cfg.mirror,
                            skip_bad=cfg.skip_bad, log=(log or print) if dist_ctx.is_main else None)

    if not dist_ctx.distributed:
        return opener()
    ds, error, failure = None, None, None
    if dist_ctx.is_main:
        try:
            ds = opener()
        except Exception as e:  # every rank must reach the gather below, whatever went wrong
            error, failure = str(e), e
    error = dist_ctx.all_gather_object(error)[0]
    if failure is not None:
        raise failure
    if error is not None:
        raise UserInputError(error)
    return ds if ds is not None else opener()


@contextmanager
def _precision_policy(cfg: TrainConfig, device: torch.device) -> Iterator[None]:
    """The official CUDA settings for the run, restored afterwards: TF32 off for matmuls and cuDNN unless
    ``cfg.allow_tf32``; cuDNN benchmarking on unless ``cfg.cudnn_benchmark`` is off (``--nobench``)."""
    if device.type != "cuda":
        yield
        return
    flags = (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"), \
        (torch.backends.cudnn, "benchmark")
    saved = [getattr(obj, name) for obj, name in flags]
    for (obj, name), value in zip(flags, (cfg.allow_tf32, cfg.allow_tf32, cfg.cudnn_benchmark), strict=True):
        setattr(obj, name, bool(value))
    try:
        yield
    finally:
        for (obj, name), value in zip(flags, saved, strict=True):
            setattr(obj, name, value)


def _recipe_kind(cfg: TrainConfig) -> str:
    if cfg.xl is not None:
        return "stylegan-xl"
    return "pggan" if cfg.progressive is not None else "stylegan"


def _start(engine: _Engine, state: dict[str, Any] | None, weights_from: str | None, progress_bar: bool | None) -> None:
    """Restore or initialise the run, print its header, write the first grids and open the progress bar."""
    recipe, d, log = engine.recipe, engine.dist, engine.log
    if state is not None:
        engine.restore(state)
        log(f"Resuming {engine.run_dir} at tick {engine.n.cur_tick}, kimg {engine.n.cur_nimg / 1000:.1f}.")
    else:
        if weights_from is not None:
            recipe.load_weights(weights_from)
            log(f"Fine-tuning from {weights_from} (ADA speed 100 kimg, no EMA ramp-up, no blur).")
        prepare = getattr(recipe, "prepare_fresh_run", None)  # optional hook (StyleGAN-XL: stem, class embeddings)
        if prepare is not None:
            for line in prepare(engine.run_dir, d):
                log(line)
        for net in (recipe.G, recipe.D, recipe.G_ema):
            d.broadcast_module(net)
    ds = engine.ds
    log(f"Run directory: {engine.run_dir}")
    width, height = getattr(ds, "width", ds.resolution), getattr(ds, "height", ds.resolution)
    log(f"Dataset: {ds.name}, {len(ds)} items ({ds.num_images} images), {width}x{height}x"
        f"{ds.num_channels}, labels: {ds.label_dim}")
    log(f"G: {sum(p.numel() for p in recipe.G.parameters()):,} parameters; D: "
        f"{sum(p.numel() for p in recipe.D.parameters()):,}; device {d.device}, {d.world_size} process(es)")
    if d.is_main and state is None:
        engine.save_reals()
        engine.save_grid("fakes_init.png")
    log.open(engine.total_nimg // 1000, engine.n.cur_nimg // 1000, progress_bar)


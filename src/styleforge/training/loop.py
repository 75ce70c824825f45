"""The StyleGAN2/3 training loop: phases Gmain / Greg / Dmain / Dreg, lazy regularisation, EMA, ADA, ticks,
snapshots, exact resume and multi-process training.

One iteration processes one global minibatch of ``batch`` images. It is cut into ``batch / batch_gpu`` chunks;
process ``rank`` handles chunks ``rank, rank + world, ...`` (one per round, gradients accumulated). Every
random number a chunk uses (latents, labels, style mixing, noise inputs, augmentation) comes from the global
torch generator re-seeded from ``(seed, iteration, phase, chunk)``, and the real images of a chunk are fixed by
the seed and the image counter. Hence a run is a function of its config only: resuming gives bit-identical
weights, and N processes give the same result as one process with the same ``batch`` and ``batch_gpu`` (up to
float summation order in the gradient all-reduce).

Lazy regularisation (StyleGAN2, section 3.1): a regulariser with interval k runs every k-th minibatch with its
loss multiplied by k, and that network's Adam uses ``lr * k / (k + 1)`` and ``betas ** (k / (k + 1))``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

import styleforge
from styleforge.data import ImageDataset, open_dataset
from styleforge.models.registry import create_model, get_preset
from styleforge.training.augment import PIPELINES, AdaController, AugmentPipe
from styleforge.training.checkpoint import (
    STATE_FILE,
    STATE_FORMAT_VERSION,
    capture_rng,
    find_latest_run,
    load_training_state,
    restore_rng,
    save_training_state,
)
from styleforge.training.config import TrainConfig, train_config_from_dict
from styleforge.training.distributed import DistContext, init_from_env
from styleforge.training.ema import ema_beta, update_ema
from styleforge.training.losses import PHASES, StyleGANLoss, phase_denominator
from styleforge.utils.errors import StyleforgeError, UserInputError
from styleforge.utils.images import make_grid, save_png, to_uint8
from styleforge.utils.io import atomic_write_json
from styleforge.utils.seeding import z_from_seed

__all__ = ["train", "TrainResult", "NonFiniteLossError", "run_description"]

#: Columns of the fixed-seed progress grid.
GRID_COLS = 8


class NonFiniteLossError(StyleforgeError):
    """A loss became NaN or infinite; training stops and the last good snapshot is kept."""


@dataclass
class TrainResult:
    """What :func:`train` did."""

    run_dir: Path
    cur_nimg: int
    cur_tick: int
    wall_time: float
    sec_per_kimg: float
    final_snapshot: Path | None
    stats: list[dict[str, Any]]


@dataclass
class _Phase:
    """One optimiser step: the losses it accumulates, every ``interval`` minibatches, with gain ``interval``."""

    name: str
    module: nn.Module
    opt: torch.optim.Optimizer
    interval: int
    index: int
    losses: tuple[str, ...]


def run_description(cfg: TrainConfig, dataset_name: str, world: int) -> str:
    """The run directory name after its number: ``<cfg>-<data>-gpus<N>-batch<B>-gamma<G>``."""
    return f"{cfg.cfg}-{dataset_name}-gpus{world}-batch{cfg.batch}-gamma{cfg.loss.r1_gamma:g}"


def _new_run_dir(outdir: Path, desc: str) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    ids = [int(d.name.split("-", 1)[0]) for d in outdir.iterdir() if d.is_dir() and d.name.split("-", 1)[0].isdigit()]
    run_dir = outdir / f"{max(ids, default=-1) + 1:05d}-{desc}"
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def _chunk_seed(seed: int, batch_idx: int, phase_idx: int, chunk: int) -> int:
    """Seed of one chunk's random numbers, independent of how chunks are spread over processes."""
    return int(np.random.SeedSequence([seed, batch_idx, phase_idx, chunk]).generate_state(1, np.uint64)[0] >> 1)


class _DataOrder:
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


def _fmt_time(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s // 60) % 60:02d}m"


def _model_overrides(cfg: TrainConfig, net: str, ds: ImageDataset, cuda: bool) -> dict[str, Any]:
    preset = get_preset(cfg.model)
    conf = preset.G_config if net == "G" else preset.D_config
    fields = {f.name for f in dataclasses.fields(conf)}
    out: dict[str, Any] = {"img_resolution": ds.resolution, "img_channels": ds.num_channels, "c_dim": ds.label_dim}
    use_fp16 = cfg.mixed_precision == "on" or (cfg.mixed_precision == "auto" and cuda)
    if "num_fp16_res" in fields and not use_fp16:
        out["num_fp16_res"] = 0
    if net == "D" and cfg.freezed:
        if "freeze_layers" not in fields:
            raise UserInputError(f"--freezed is not supported by the discriminator of {cfg.model!r}.")
        out["freeze_layers"] = cfg.freezed
    out.update(cfg.model_overrides.get(net, {}))
    unknown = sorted(set(out) - fields)
    if unknown:
        raise UserInputError(f"{cfg.model!r} {net} has no option(s) {unknown}; valid: {', '.join(sorted(fields))}.")
    return out


def _make_optimizer(params: list[nn.Parameter], lr: float, betas: tuple[float, float], eps: float,
                    reg_interval: int) -> torch.optim.Adam:
    """Adam with the lazy-regularisation correction ``mb_ratio = k / (k + 1)`` (k = 0: no correction)."""
    ratio = reg_interval / (reg_interval + 1) if reg_interval > 0 else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio), eps=eps)


def _grid_inputs(cfg: TrainConfig, G: nn.Module, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.cat([z_from_seed(s, G.z_dim) for s in range(cfg.grid_size)]).to(device)
    c = torch.zeros(cfg.grid_size, G.c_dim, device=device)
    if G.c_dim > 0:
        c[torch.arange(cfg.grid_size), torch.arange(cfg.grid_size) % G.c_dim] = 1
    return z, c


@torch.no_grad()
def _render_grid(G_ema: nn.Module, z: torch.Tensor, c: torch.Tensor, batch: int) -> np.ndarray:
    imgs = [to_uint8(G_ema(z[i : i + batch], c[i : i + batch], noise_mode="const")) for i in range(0, len(z), batch)]
    return make_grid(np.concatenate(imgs), cols=GRID_COLS)


def _reals_grid(ds: ImageDataset, count: int) -> np.ndarray:
    idx = np.random.default_rng(0).choice(len(ds), size=min(count, len(ds)), replace=False)
    imgs = np.stack([ds[int(i)][0].transpose(1, 2, 0) for i in idx])
    return make_grid(imgs, cols=GRID_COLS)


def _copy_networks_from(path: str, G: nn.Module, D: nn.Module, G_ema: nn.Module) -> None:
    """Start from the weights of an exported snapshot or official pickle (counters start at 0)."""
    from styleforge.loading import load

    loaded = load(path)
    for name, dst in (("G", G), ("D", D), ("G_ema", G_ema)):
        src = getattr(loaded, name, None)
        if src is None:
            continue
        try:
            dst.load_state_dict(src.state_dict(), strict=True)
        except RuntimeError as e:
            raise UserInputError(
                f"--resume {path}: its {name} does not match the configured network ({e}). Use the same --cfg, "
                "resolution and --cond as the run that made it."
            ) from None


def train(
    cfg: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: str | None = None,
    dist_ctx: DistContext | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
    progress_bar: bool | None = None,
    time_limit_s: float | None = None,
) -> TrainResult:
    """Train G and D as ``cfg`` says; returns where the results are.

    Args:
        cfg: the resolved configuration (:func:`styleforge.training.config.make_train_config`).
        run_dir: write into this directory (created) instead of a new numbered one under ``cfg.outdir``.
        resume: ``None``; ``"latest"`` (continue the newest run in ``cfg.outdir`` in place); a run directory or
            ``training_state.pt`` (continue it exactly, in place); or an exported snapshot / official pickle
            (start a new run from its weights).
        dist_ctx: process group context (default: from torchrun's environment variables).
        device: ``cpu``, ``cuda`` or ``None`` (CUDA when available).
        log: where progress lines go (default: print, on rank 0 only).
        progress_bar: tqdm bar (default: when stderr is a terminal).
        time_limit_s: stop (with a final snapshot) after the first minibatch that ends past this many seconds.

    Raises:
        NonFiniteLossError: a loss became NaN/inf; the message names the phase and tick.
        UserInputError: bad data, options or resume path.
    """
    dist_ctx = dist_ctx or init_from_env(device)
    dev = dist_ctx.device
    is_main = dist_ctx.is_main
    t_start = time.time()

    # --- resume: find the state ---
    state: dict[str, Any] | None = None
    weights_from: str | None = None
    if resume is not None:
        if resume == "latest":
            run_dir = find_latest_run(cfg.outdir)
            state = load_training_state(run_dir)
        else:
            rp = Path(resume)
            if (rp.is_dir() and (rp / STATE_FILE).is_file()) or (rp.is_file() and rp.suffix == ".pt"):
                state = load_training_state(rp)
                run_dir = rp if rp.is_dir() else rp.parent
            else:
                weights_from = resume
        if state is not None:
            old = train_config_from_dict(state["config"])
            for key in ("model", "cond", "batch"):
                if getattr(old, key) != getattr(cfg, key):
                    raise UserInputError(
                        f"Cannot resume {run_dir} with a different {key} ({getattr(old, key)!r} in the run, "
                        f"{getattr(cfg, key)!r} now)."
                    )

    # --- data ---
    ds = open_dataset(cfg.data, resolution=cfg.resolution, use_labels=cfg.cond, xflip=cfg.mirror,
                      skip_bad=cfg.skip_bad)
    world = dist_ctx.world_size
    if cfg.batch % (cfg.batch_gpu * world) != 0:
        raise UserInputError(
            f"--batch ({cfg.batch}) must be a multiple of --batch-gpu ({cfg.batch_gpu}) x processes ({world})."
        )
    num_rounds = cfg.batch // (cfg.batch_gpu * world)

    # --- run directory ---
    if run_dir is None:
        name = _new_run_dir(Path(cfg.outdir), run_description(cfg, ds.name, world)) if is_main else None
        run_dir = Path(dist_ctx.all_gather_object(str(name) if name else None)[0])
    run_dir = Path(run_dir)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if state is None:  # a fresh run starts fresh logs (a resumed one appends)
            for name in ("stats.jsonl", "log.txt"):
                (run_dir / name).unlink(missing_ok=True)
        atomic_write_json(run_dir / "config.json", {"styleforge_version": styleforge.__version__,
                                                    "world_size": world, "train": cfg.to_dict()})
    log_file = run_dir / "log.txt"

    def emit(msg: str) -> None:
        if not is_main:
            return
        if log is not None:
            log(msg)
        elif bar is not None:
            bar.write(msg)
        else:
            print(msg, flush=True)
        with open(log_file, "a", encoding="utf-8") as f:
            f.write(msg + "\n")

    bar = None

    # --- networks ---
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    cuda = dev.type == "cuda"
    G = create_model(cfg.model, "G", **_model_overrides(cfg, "G", ds, cuda)).to(dev).train()
    D = create_model(cfg.model, "D", **_model_overrides(cfg, "D", ds, cuda)).to(dev).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    if weights_from is not None:
        _copy_networks_from(weights_from, G, D, G_ema)

    augment_pipe = None
    ada = None
    if cfg.augment.mode != "noaug":
        if cfg.augment.pipeline not in PIPELINES:
            raise UserInputError(f"Unknown augment pipeline {cfg.augment.pipeline!r}; known: {', '.join(PIPELINES)}.")
        augment_pipe = AugmentPipe(PIPELINES[cfg.augment.pipeline], p=cfg.augment.p).to(dev)
        if cfg.augment.mode == "ada":
            ada = AdaController(augment_pipe, target=cfg.augment.target, interval=cfg.augment.interval,
                                ada_kimg=cfg.augment.ada_kimg, batch_size=cfg.batch)
    loss = StyleGANLoss(G, D, cfg.loss, augment_pipe, ada)

    # --- phases and optimisers ---
    g_reg = cfg.loss.pl_interval if cfg.loss.pl_weight > 0 and cfg.loss.pl_interval > 0 else 0
    d_reg = cfg.loss.r1_interval if cfg.loss.r1_gamma != 0 and cfg.loss.r1_interval > 0 else 0
    g_params = [p for p in G.parameters() if p.requires_grad]
    d_params = [p for p in D.parameters() if p.requires_grad]
    opt_G = _make_optimizer(g_params, cfg.g_opt.lr, cfg.g_opt.betas, cfg.g_opt.eps, g_reg)
    opt_D = _make_optimizer(d_params, cfg.d_opt.lr, cfg.d_opt.betas, cfg.d_opt.eps, d_reg)
    # A regulariser with interval 0 is not lazy: its loss joins the main phase (one Adam step per minibatch).
    phases = [_Phase("Gmain", G, opt_G, 1, 0, ("Gmain", "Greg") if cfg.loss.pl_weight > 0 and not g_reg
                     else ("Gmain",))]
    if cfg.loss.pl_weight > 0 and g_reg:
        phases.append(_Phase("Greg", G, opt_G, g_reg, 1, ("Greg",)))
    phases.append(_Phase("Dmain", D, opt_D, 1, 2, ("Dmain", "Dreg") if cfg.loss.r1_gamma != 0 and not d_reg
                         else ("Dmain",)))
    if cfg.loss.r1_gamma != 0 and d_reg:
        phases.append(_Phase("Dreg", D, opt_D, d_reg, 3, ("Dreg",)))
    assert all(name in PHASES for p in phases for name in p.losses)

    # --- counters and resume ---
    cur_nimg, cur_tick, batch_idx = 0, 0, 0
    if state is not None:
        try:
            G.load_state_dict(state["G"])
            D.load_state_dict(state["D"])
            G_ema.load_state_dict(state["G_ema"])
            opt_G.load_state_dict(state["opt_G"])
            opt_D.load_state_dict(state["opt_D"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserInputError(
                f"The training state in {run_dir} does not fit the networks built for this data and config "
                f"({str(e).splitlines()[0]}). Resume with the same data, resolution and options."
            ) from None
        loss.pl_mean.copy_(state["pl_mean"].to(dev))
        if augment_pipe is not None and state.get("augment_p") is not None:
            augment_pipe.p.fill_(float(state["augment_p"]))
        if ada is not None and state.get("ada") is not None:
            ada.load_state_dict(state["ada"])
        cur_nimg, cur_tick, batch_idx = int(state["cur_nimg"]), int(state["cur_tick"]), int(state["batch_idx"])
        rng = state["rng"]
        restore_rng(rng[dist_ctx.rank] if len(rng) == world else rng[0])
        emit(f"Resuming {run_dir} at tick {cur_tick}, kimg {cur_nimg / 1000:.1f}.")
    else:
        dist_ctx.broadcast_module(G)
        dist_ctx.broadcast_module(D)
        dist_ctx.broadcast_module(G_ema)

    total_nimg = int(round(cfg.kimg * 1000))
    order = _DataOrder(len(ds), cfg.seed)
    grid_z, grid_c = _grid_inputs(cfg, G, dev)
    label_table = torch.from_numpy(np.stack([ds.get_label(i) for i in range(ds.num_images)])).to(dev) \
        if ds.has_labels else torch.zeros(ds.num_images, 0, device=dev)

    if is_main:
        emit(f"Run directory: {run_dir}")
        emit(f"Dataset: {ds.name}, {len(ds)} items ({ds.num_images} images), {ds.resolution}x{ds.resolution}x"
             f"{ds.num_channels}, labels: {ds.label_dim}")
        emit(f"G: {sum(p.numel() for p in G.parameters()):,} parameters; D: "
             f"{sum(p.numel() for p in D.parameters()):,}; device {dev}, {world} process(es), "
             f"{num_rounds} round(s) of {cfg.batch_gpu}")
        if state is None:
            save_png(run_dir / "reals.png", _reals_grid(ds, cfg.grid_size))
            save_png(run_dir / "fakes_init.png", _render_grid(G_ema, grid_z, grid_c, cfg.batch_gpu))
    want_bar = progress_bar if progress_bar is not None else sys.stderr.isatty()
    if is_main and want_bar and log is None:
        from tqdm import tqdm

        bar = tqdm(total=total_nimg // 1000, initial=cur_nimg // 1000, unit="kimg", dynamic_ncols=True,
                   leave=False)

    tb_writer = None
    if is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb_writer = SummaryWriter(str(run_dir))
        except ImportError:
            tb_writer = None

    # --- the loop ---
    stats_sum: dict[str, float] = {}
    tick_start_nimg, tick_start_time = cur_nimg, time.time()
    maintenance_time = 0.0
    all_stats: list[dict[str, Any]] = []
    sec_per_kimg = float("nan")
    final_snapshot: Path | None = None
    all_reduce = dist_ctx.all_reduce
    done = cur_nimg >= total_nimg

    def load_reals(chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = order.indices(cur_nimg + chunk * cfg.batch_gpu, cfg.batch_gpu)
        items = [ds[int(i)] for i in idx]
        img = torch.from_numpy(np.stack([it[0] for it in items])).to(dev).to(torch.float32) / 127.5 - 1
        lab = torch.from_numpy(np.stack([it[1] for it in items])).to(dev)
        return img, lab

    try:
        while not done:
            reals_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            bufs_before = dist_ctx.float_buffers(G) if dist_ctx.distributed else []
            for phase in phases:
                if batch_idx % phase.interval != 0:
                    continue
                G.requires_grad_(phase.module is G)
                D.requires_grad_(phase.module is D)
                phase.opt.zero_grad(set_to_none=True)
                failed: str | None = None
                for r in range(num_rounds):
                    chunk = r * world + dist_ctx.rank
                    if "Dmain" in phase.losses or "Dreg" in phase.losses:
                        if chunk not in reals_cache:
                            reals_cache[chunk] = load_reals(chunk)
                        real_img, real_c = reals_cache[chunk]
                    else:
                        real_img = real_c = None
                    torch.manual_seed(_chunk_seed(cfg.seed, batch_idx, phase.index, chunk))
                    gen_z = torch.randn(cfg.batch_gpu, G.z_dim, device=dev)
                    gen_c = label_table[torch.randint(ds.num_images, (cfg.batch_gpu,), device=dev)]
                    for name in phase.losses:
                        denom = phase_denominator(name, cfg.batch, cfg.loss, cfg.batch_gpu)
                        out = loss.accumulate(name, real_img, real_c, gen_z, gen_c, gain=phase.interval,
                                              denom=denom, cur_nimg=cur_nimg)
                        for k, v in out.items():
                            val = float(v)
                            if k.startswith("loss/") and not math.isfinite(val):
                                failed = failed or name
                            stats_sum[k] = stats_sum.get(k, 0.0) + val
                flags = all_reduce(torch.tensor([float(failed == n) for n in PHASES]))
                if float(flags.sum()) > 0:
                    failed = PHASES[int(flags.argmax())]
                    last = run_dir / STATE_FILE
                    kept = f"The last good training state is {last}." if last.is_file() else \
                        "No snapshot had been written yet."
                    raise NonFiniteLossError(
                        f"Non-finite loss in phase {failed} at tick {cur_tick} (kimg {cur_nimg / 1000:.3f}); "
                        f"training stopped. {kept} Lower the learning rate or --gamma, or check the data."
                    )
                params = [p for p in phase.module.parameters() if p.requires_grad]
                dist_ctx.all_reduce_grads(params)
                for p in params:
                    if p.grad is not None:
                        torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
                phase.opt.step()
                for name in phase.losses:
                    loss.finish_phase(name, all_reduce)
            G.requires_grad_(False)
            D.requires_grad_(False)

            dist_ctx.merge_buffers(G, bufs_before)
            update_ema(G_ema, G, ema_beta(cfg.batch, cur_nimg, cfg.ema_kimg, cfg.ema_rampup))
            cur_nimg += cfg.batch
            batch_idx += 1
            if ada is not None:
                ada.update(all_reduce)
            if bar is not None:
                bar.n = cur_nimg // 1000
                bar.refresh()

            done = cur_nimg >= total_nimg
            if time_limit_s is not None and time.time() - t_start >= time_limit_s:
                done = True
            if not done and cur_nimg < tick_start_nimg + cfg.tick_kimg * 1000:
                continue

            # --- end of tick ---
            tick_end_time = time.time()
            keys = sorted(stats_sum)
            summed = all_reduce(torch.tensor([stats_sum[k] for k in keys], dtype=torch.float64)).tolist() \
                if keys else []
            totals = dict(zip(keys, summed, strict=True))
            means = {k[5:]: totals[k] / max(totals.get("count/" + k[5:], 1.0), 1.0)
                     for k in keys if k.startswith("loss/")}
            means.update({k: totals[k] / max(totals.get("count/" + k, 1.0), 1.0)
                          for k in keys if k.startswith("scores/")})
            stats_sum.clear()
            tick_kimg = (cur_nimg - tick_start_nimg) / 1000
            sec_per_tick = tick_end_time - tick_start_time
            sec_per_kimg = sec_per_tick / max(tick_kimg, 1e-9)
            eta = (total_nimg - cur_nimg) / 1000 * sec_per_kimg
            if time_limit_s is not None:
                eta = min(eta, max(time_limit_s - (tick_end_time - t_start), 0.0))
            aug_p = float(augment_pipe.p) if augment_pipe is not None else 0.0
            record = {
                "tick": cur_tick, "kimg": cur_nimg / 1000, "time_s": tick_end_time - t_start,
                "sec_per_tick": sec_per_tick, "sec_per_kimg": sec_per_kimg, "maintenance_s": maintenance_time,
                "augment_p": aug_p, "ada_rt": ada.last_rt if ada is not None else None,
                "pl_mean": float(loss.pl_mean), **{f"loss/{k}" if "/" not in k else k: v for k, v in means.items()},
            }
            all_stats.append(record)
            parts = [f"tick {cur_tick:<4d}", f"kimg {cur_nimg / 1000:<8.1f}", f"time {_fmt_time(record['time_s']):<9s}",
                     f"sec/tick {sec_per_tick:<6.1f}", f"sec/kimg {sec_per_kimg:<7.2f}",
                     f"maint {maintenance_time:<5.1f}"]
            parts += [f"{k} {v:<7.4f}" for k, v in means.items() if not k.startswith("scores/")]
            parts += [f"augment {aug_p:.3f}", f"ETA {_fmt_time(eta)}"]
            emit("  ".join(parts))
            maint_start = time.time()
            if is_main:
                with open(run_dir / "stats.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                if tb_writer is not None:
                    for k, v in record.items():
                        if isinstance(v, (int, float)) and k not in ("tick", "kimg"):
                            tb_writer.add_scalar(k, v, global_step=cur_nimg // 1000)
                    tb_writer.flush()

            # Snapshots: full training state + exportable network + metrics.
            if done or (cfg.snap > 0 and (cur_tick + 1) % cfg.snap == 0):
                rng_all = dist_ctx.all_gather_object(capture_rng())
                if is_main:
                    state_out = {
                        "format_version": STATE_FORMAT_VERSION,
                        "styleforge_version": styleforge.__version__,
                        "config": cfg.to_dict(),
                        "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
                        "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
                        "pl_mean": loss.pl_mean.detach().cpu(),
                        "augment_p": aug_p if augment_pipe is not None else None,
                        "ada": ada.state_dict() if ada is not None else None,
                        "rng": rng_all,
                        "cur_nimg": cur_nimg, "cur_tick": cur_tick + 1, "batch_idx": batch_idx,
                    }
                    save_training_state(run_dir / STATE_FILE, state_out)
                    final_snapshot = run_dir / f"network-snapshot-{cur_nimg // 1000:06d}"
                    from styleforge.loading import save as save_networks

                    save_networks(final_snapshot, G=G, D=D, G_ema=G_ema, extra={
                        "augment_p": aug_p, "cur_nimg": cur_nimg, "training_config": cfg.cfg,
                        "dataset": ds.name})
                    for metric in cfg.metrics:
                        from styleforge.metrics.registry import MetricContext, compute_metric

                        res = compute_metric(metric, MetricContext(G=G_ema, dataset=ds, device=dev,
                                                                   batch_size=cfg.batch_gpu, progress=False))
                        emit(f"metric {metric}: {res}")
                        with open(run_dir / f"metric-{metric}.jsonl", "a", encoding="utf-8") as f:
                            f.write(json.dumps({"kimg": cur_nimg / 1000, "snapshot": final_snapshot.name,
                                                "results": res}) + "\n")
                dist_ctx.barrier()
            if is_main and (done or (cfg.image_snap > 0 and (cur_tick + 1) % cfg.image_snap == 0)):
                save_png(run_dir / f"fakes{cur_nimg // 1000:06d}.png", _render_grid(G_ema, grid_z, grid_c,
                                                                                   cfg.batch_gpu))
            cur_tick += 1
            tick_start_nimg = cur_nimg
            maintenance_time = time.time() - maint_start
            tick_start_time = time.time()
    finally:
        if bar is not None:
            bar.close()
        if tb_writer is not None:
            tb_writer.close()

    wall = time.time() - t_start
    emit(f"Done: {cur_nimg / 1000:.1f} kimg in {_fmt_time(wall)}.")
    return TrainResult(run_dir=run_dir, cur_nimg=cur_nimg, cur_tick=cur_tick, wall_time=wall,
                       sec_per_kimg=sec_per_kimg, final_snapshot=final_snapshot, stats=all_stats)

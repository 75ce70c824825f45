"""Progressive growing training for PGGAN (Karras et al. 2018, section 2 and appendix A.1).

Entry point, called by ``styleforge train --cfg pggan*``::

    run_progressive_training(
        config: ProgressiveTrainConfig,    # progressive_config("pggan-tiny", data="emoji", ...)
        *,
        run_dir: str | os.PathLike,         # holds config.json, grids, snapshots, log.txt
        dataset: Any = None,                # an opened dataset (default: open_dataset(config.data))
        resume: str | os.PathLike | None,   # a training_state.pt or a run directory holding one
        device: str | torch.device = "cpu",
        stop_at_kimg: float | None = None,  # stop early (after a snapshot), e.g. to test resume
        log: Callable[[str], None] = print,
    ) -> ProgressiveResult

Training, as in the paper:

- Schedule: train at ``4x4`` for ``stabilize_kimg`` thousand real images, then for every further resolution
  fade the new block in over ``fade_kimg`` thousand images (``alpha`` rising linearly from 0 to 1) and
  stabilise it for ``stabilize_kimg`` thousand images. Minibatch size per resolution is part of
  :class:`GrowthSchedule`.
- Real images are downsampled (box filter) to the current resolution and, during a fade-in, blended with their
  ``2x`` downsampled-then-upsampled version by the same ``alpha``, so they match what the faded G can produce.
- Loss: WGAN-GP (Gulrajani et al. 2017) with ``lambda = 10`` and the drift term ``epsilon_drift * E[D(x)^2]``,
  ``epsilon_drift = 0.001``; for conditional data an auxiliary classifier cross-entropy on reals and fakes.
- Adam with ``lr = 0.001, beta1 = 0, beta2 = 0.99, eps = 1e-8``; one D step then one G step per minibatch.
- ``G_ema``: exponential moving average of G's weights with ``beta = 0.999`` per step (paper appendix A.1;
  the ``pggan-tiny`` preset uses 0.99 because its phases are about 100 times shorter).
- Exact resume: the stage (in the networks' buffers), image and tick counters, both optimizers and the state
  of the single ``torch.Generator`` that draws every random number of the loop are in ``training_state.pt``;
  stopping anywhere (also inside a fade-in) and resuming gives bit-identical weights to an uninterrupted run.

Outputs in ``run_dir``: ``config.json`` (the resolved config), ``log.txt``, ``stats.jsonl`` (one record per
tick), ``reals.png``, a sample grid of ``G_ema`` at the end of every resolution (``fakes_res{R}.png``,
nearest-upsampled to the final size), snapshots ``network-snapshot-{kimg:06d}/`` in the styleforge model format
(``styleforge.load`` reads them; the stage is in the networks' buffers) and ``training_state.pt`` for resume.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from styleforge.models.base import config_from_dict
from styleforge.models.pggan import (
    BASE_RESOLUTION,
    SCALE,
    PGGANDiscriminator,
    PGGANGenerator,
    downsample_box,
    upsample_nearest,
)
from styleforge.models.registry import create_model, get_preset
from styleforge.training.checkpoint import STATE_FILE, load_training_state, save_training_state
from styleforge.training.ema import update_ema
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import make_grid, save_png, to_uint8
from styleforge.utils.io import atomic_write_json

__all__ = [
    "GrowthSchedule",
    "WGANGPConfig",
    "ProgressiveTrainConfig",
    "ProgressiveResult",
    "Stage",
    "TRAIN_PRESETS",
    "progressive_config",
    "stage_at",
    "prepare_reals",
    "wgan_gp_losses",
    "generator_loss",
    "run_progressive_training",
]

#: ``kind`` entry of a progressive training state (the StyleGAN loop writes the same file name)
STATE_KIND = "progressive"
STATE_FORMAT_VERSION = 1
#: uint8 [0, 255] -> [-1, 1]: x / 127.5 - 1
PIXEL_SCALE = 127.5


# ------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class GrowthSchedule:
    """When the networks grow and with which minibatch (paper appendix A.1; lengths in kimg)."""

    start_resolution: int = BASE_RESOLUTION  # first trained resolution
    stabilize_kimg: float = 800.0  # images per stabilisation phase (paper: 800k)
    fade_kimg: float = 800.0  # images per fade-in phase (paper: 800k)
    # (resolution, minibatch) pairs; the paper: 16 up to 128^2, then 14, 6, 3
    batch_sizes: tuple[tuple[int, int], ...] = ((128, 16), (256, 14), (512, 6), (1024, 3))
    # (resolution, kimg) pairs: length of both phases of that resolution where it differs from the above
    # (cheap low resolutions can train longer on a CPU budget); the paper uses none
    kimg_per_resolution: tuple[tuple[int, float], ...] = ()
    total_kimg: float | None = None  # None: stop at the end of the last stabilisation phase

    def batch_size(self, resolution: int) -> int:
        """Minibatch at ``resolution``: that of the smallest listed resolution >= it (else the last one)."""
        pairs = sorted(self.batch_sizes)
        for res, batch in pairs:
            if resolution <= res:
                return batch
        return pairs[-1][1]


@dataclass(frozen=True)
class WGANGPConfig:
    """WGAN-GP loss with the PGGAN drift term (paper section A.1)."""

    gp_weight: float = 10.0  # lambda
    gp_target: float = 1.0  # gamma: target gradient norm (the penalty is ((|grad| - gamma) / gamma)^2)
    drift_weight: float = 0.001  # epsilon_drift
    label_weight: float = 1.0  # weight of the auxiliary classifier loss (conditional data only)


@dataclass(frozen=True)
class ProgressiveTrainConfig:
    """Everything that defines a progressive training run; written to ``run_dir/config.json``."""

    model: str = "pggan-tiny"  # model preset (styleforge.create_model name)
    data: str = "emoji"  # dataset: folder, zip or built-in name
    use_labels: bool = False  # conditional training on the dataset's labels
    xflip: bool = False  # add mirrored images
    seed: int = 0
    schedule: GrowthSchedule = field(default_factory=GrowthSchedule)
    loss: WGANGPConfig = field(default_factory=WGANGPConfig)
    lr: float = 0.001  # Adam learning rate (both networks)
    betas: tuple[float, float] = (0.0, 0.99)
    adam_eps: float = 1e-8
    reset_optimizer_on_grow: bool = True  # clear Adam moments when a new resolution starts fading in
    ema_beta: float = 0.999  # G_ema decay per step
    tick_kimg: float = 4.0  # progress line every this many thousand images
    snapshot_ticks: int = 50  # snapshot every this many ticks (and at the end of every resolution)
    grid_size: int = 8  # sample grid is grid_size x grid_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: training presets for ``--cfg``
TRAIN_PRESETS: dict[str, ProgressiveTrainConfig] = {
    "pggan": ProgressiveTrainConfig(model="pggan"),
    # 4 -> 8 -> 16 -> 32 on emoji in a few CPU minutes: short phases (longer at the cheap 4x4 and 8x8),
    # minibatch 16, faster EMA.
    "pggan-tiny": ProgressiveTrainConfig(
        model="pggan-tiny",
        schedule=GrowthSchedule(
            stabilize_kimg=6.0,
            fade_kimg=6.0,
            batch_sizes=((32, 16),),
            kimg_per_resolution=((4, 12.0), (8, 8.0)),
        ),
        ema_beta=0.99,
        tick_kimg=2.0,
        snapshot_ticks=1000,
    ),
}


def progressive_config(cfg: str, **overrides: Any) -> ProgressiveTrainConfig:
    """The training preset ``cfg`` (``"pggan"`` or ``"pggan-tiny"``) with ``overrides`` applied strictly.

    Nested configs are overridden with dicts (``schedule={"fade_kimg": 100}``) or instances; unknown keys
    raise :class:`UserInputError` listing the valid ones.
    """
    if cfg not in TRAIN_PRESETS:
        known = ", ".join(sorted(TRAIN_PRESETS))
        raise UserInputError(f"Unknown progressive config {cfg!r}; available: {known}.")
    data = TRAIN_PRESETS[cfg].to_dict()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        elif dataclasses.is_dataclass(value):
            data[key] = dataclasses.asdict(value)
        else:
            data[key] = value
    return config_from_dict(ProgressiveTrainConfig, data)


# ------------------------------------------------------------------------------------------------------------
# Schedule


@dataclass(frozen=True)
class Stage:
    """Where training is at a given image count."""

    resolution: int  # current resolution R
    alpha: float  # fade-in weight of the R block (1 outside fade-in phases)
    phase: int  # 0 = stabilise 4x4, then (fade R, stabilise R) pairs: 2k-1 fades in, 2k stabilises
    fading: bool


def _phase_lengths(schedule: GrowthSchedule, final_resolution: int) -> list[tuple[int, bool, int]]:
    """``[(resolution, fading, num_images), ...]`` for every phase up to the final stabilisation."""
    override = dict(schedule.kimg_per_resolution)

    def images(res: int, kimg: float) -> int:
        return int(round(override.get(res, kimg) * 1000))

    phases = [(schedule.start_resolution, False, images(schedule.start_resolution, schedule.stabilize_kimg))]
    res = schedule.start_resolution * SCALE
    while res <= final_resolution:
        phases.append((res, True, images(res, schedule.fade_kimg)))
        phases.append((res, False, images(res, schedule.stabilize_kimg)))
        res *= SCALE
    return phases


def total_images(schedule: GrowthSchedule, final_resolution: int) -> int:
    """Images of the whole run: ``total_kimg`` if set, else the end of the last stabilisation phase."""
    if schedule.total_kimg is not None:
        return int(round(schedule.total_kimg * 1000))
    return sum(n for _, _, n in _phase_lengths(schedule, final_resolution))


def stage_at(nimg: int, schedule: GrowthSchedule, final_resolution: int) -> Stage:
    """The stage after ``nimg`` real images; during a fade ``alpha = (nimg - fade_start) / fade_images``.

    Beyond the last phase training stays at the final resolution with ``alpha = 1``.
    """
    start = 0
    phases = _phase_lengths(schedule, final_resolution)
    for index, (res, fading, length) in enumerate(phases):
        if nimg < start + length:
            alpha = (nimg - start) / length if fading else 1.0
            return Stage(res, float(alpha), index, fading)
        start += length
    return Stage(final_resolution, 1.0, len(phases), False)


# ------------------------------------------------------------------------------------------------------------
# Pieces of one training step (pure functions, reusable and unit-tested)


def prepare_reals(images: torch.Tensor, resolution: int, alpha: float) -> torch.Tensor:
    """Real images for the current stage (paper section 2: the reals fade like the generator).

    Args:
        images: uint8 or float ``[N, C, H, W]``; uint8 in ``[0, 255]`` is mapped to ``[-1, 1]``.
        resolution: current resolution ``R`` (``H`` must be ``R`` times a power of two).
        alpha: fade-in weight; below 1 the result is ``lerp(upsample(downsample(x_R)), x_R, alpha)``.

    Returns:
        float32 ``[N, C, R, R]`` in ``[-1, 1]``.
    """
    x = images.to(torch.float32)
    if images.dtype == torch.uint8:
        x = x / PIXEL_SCALE - 1.0
    factor = x.shape[-1] // resolution
    if factor * resolution != x.shape[-1] or factor & (factor - 1):
        raise UserInputError(f"images of size {x.shape[-1]} cannot be reduced to {resolution} by halving.")
    x = downsample_box(x, factor)
    if alpha < 1.0:
        x = torch.lerp(upsample_nearest(downsample_box(x)), x, alpha)
    return x


def _label_loss(logits: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the auxiliary classifier against one-hot (or soft) labels ``c``, per sample."""
    return -(c * F.log_softmax(logits, dim=1)).sum(dim=1)


def wgan_gp_losses(
    G: PGGANGenerator,
    D: PGGANDiscriminator,
    reals: torch.Tensor,
    real_c: torch.Tensor,
    z: torch.Tensor,
    fake_c: torch.Tensor,
    mix: torch.Tensor,
    loss: WGANGPConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Discriminator loss of one minibatch (WGAN-GP + drift, + AC loss when conditional).

    ``L_D = E[D(G(z))] - E[D(x)] + lambda * E[((|grad D(x_hat)| - gamma) / gamma)^2] + eps_drift * E[D(x)^2]``
    with ``x_hat = lerp(x, G(z), mix)``, ``mix ~ U[0, 1]`` per sample (``[N, 1, 1, 1]``). Returns the scalar
    loss and logged values.
    """
    conditional = D.c_dim > 0
    with torch.no_grad():
        fakes = G(z, fake_c if conditional else None)
    real_scores, real_logits = D(reals, real_c, return_label_logits=True)
    fake_scores, fake_logits = D(fakes, fake_c, return_label_logits=True)
    mixed = torch.lerp(reals, fakes, mix).requires_grad_(True)
    mixed_scores = D(mixed, real_c)
    (grad,) = torch.autograd.grad(mixed_scores.sum(), mixed, create_graph=True)
    grad_norm = grad.flatten(1).norm(dim=1)
    penalty = ((grad_norm - loss.gp_target) / loss.gp_target).square()
    drift = real_scores.square()[:, 0]
    total = fake_scores[:, 0] - real_scores[:, 0] + loss.gp_weight * penalty + loss.drift_weight * drift
    if conditional:
        labels = _label_loss(real_logits, real_c) + _label_loss(fake_logits, fake_c)
        total = total + loss.label_weight * labels
    stats = {
        "D_real": real_scores.mean().item(),
        "D_fake": fake_scores.mean().item(),
        "grad_norm": grad_norm.mean().item(),
    }
    return total.mean(), stats


def generator_loss(
    G: PGGANGenerator, D: PGGANDiscriminator, z: torch.Tensor, c: torch.Tensor, loss: WGANGPConfig
) -> torch.Tensor:
    """``L_G = -E[D(G(z))]`` (+ the AC loss on fakes when conditional)."""
    conditional = D.c_dim > 0
    fakes = G(z, c if conditional else None)
    scores, logits = D(fakes, c, return_label_logits=True)
    total = -scores[:, 0]
    if conditional:
        total = total + loss.label_weight * _label_loss(logits, c)
    return total.mean()


def _set_stage(stage: Stage, *nets: PGGANGenerator | PGGANDiscriminator) -> None:
    for net in nets:
        net.set_stage(stage.resolution, stage.alpha)


# ------------------------------------------------------------------------------------------------------------
# State, snapshots and grids


@dataclass
class _Run:
    """Mutable loop state (everything that a resume restores)."""

    G: PGGANGenerator
    D: PGGANDiscriminator
    G_ema: PGGANGenerator
    opt_G: torch.optim.Adam
    opt_D: torch.optim.Adam
    rng: torch.Generator
    cur_nimg: int = 0
    cur_tick: int = 0
    tick_start_nimg: int = 0
    last_phase: int = -1
    stats: dict[str, float] = field(default_factory=dict)


def _make_optimizer(net: torch.nn.Module, config: ProgressiveTrainConfig) -> torch.optim.Adam:
    beta1, beta2 = (float(b) for b in config.betas)  # JSON may turn 0.0 into 0, which Adam rejects
    return torch.optim.Adam(net.parameters(), lr=config.lr, betas=(beta1, beta2), eps=config.adam_eps)


def _training_state(run: _Run, config: ProgressiveTrainConfig) -> dict[str, Any]:
    """Everything needed to continue exactly; only tensors and primitives (loadable with ``weights_only``)."""
    return {
        "format_version": STATE_FORMAT_VERSION,
        "kind": STATE_KIND,
        "config": json.dumps(config.to_dict()),
        "G": run.G.state_dict(),
        "D": run.D.state_dict(),
        "G_ema": run.G_ema.state_dict(),
        "opt_G": run.opt_G.state_dict(),
        "opt_D": run.opt_D.state_dict(),
        "rng": run.rng.get_state(),
        "cur_nimg": run.cur_nimg,
        "cur_tick": run.cur_tick,
        "tick_start_nimg": run.tick_start_nimg,
        "last_phase": run.last_phase,
    }


def _restore(run: _Run, path: str | os.PathLike, config: ProgressiveTrainConfig) -> None:
    state = load_training_state(Path(path).expanduser())
    if state.get("kind") != STATE_KIND:
        raise UserInputError(
            f"{path} is not a progressive (PGGAN) training state; resume PGGAN runs from their own run directory."
        )
    saved = json.loads(state["config"])
    if saved != json.loads(json.dumps(config.to_dict())):
        diff = sorted(k for k in saved if saved[k] != config.to_dict().get(k))
        raise UserInputError(
            f"Cannot resume from {path}: it was trained with a different config (differs in {diff}). "
            "Resume with the same options, or start a new run."
        )
    for name in ("G", "D", "G_ema"):
        getattr(run, name).load_state_dict(state[name])
    run.opt_G.load_state_dict(state["opt_G"])
    run.opt_D.load_state_dict(state["opt_D"])
    run.rng.set_state(state["rng"])
    run.cur_nimg = int(state["cur_nimg"])
    run.cur_tick = int(state["cur_tick"])
    run.tick_start_nimg = int(state["tick_start_nimg"])
    run.last_phase = int(state["last_phase"])


def _save_snapshot(
    run: _Run, run_dir: Path, config: ProgressiveTrainConfig, log: Callable[[str], None]
) -> Path:
    """Model snapshot in our format plus the training state; returns the snapshot directory."""
    from styleforge.loading import save  # imported late: loading sits beside training in the import order

    kimg = run.cur_nimg // 1000
    snap = run_dir / f"network-snapshot-{kimg:06d}"
    extra = {
        "family": "pggan",
        "cur_nimg": run.cur_nimg,
        "stage_resolution": run.G.current_resolution,
        "stage_alpha": run.G.alpha,
        "train_config": config.to_dict(),
    }
    save(snap, G=run.G, D=run.D, G_ema=run.G_ema, extra=extra)
    save_training_state(run_dir / STATE_FILE, _training_state(run, config))
    log(f"snapshot {snap.name} (stage {run.G.current_resolution}px, alpha {run.G.alpha:.3f})")
    return snap


@torch.no_grad()
def save_sample_grid(
    G_ema: PGGANGenerator, z: torch.Tensor, c: torch.Tensor | None, path: Path, grid_size: int
) -> None:
    """``grid_size**2`` samples of ``G_ema`` at its stage, nearest-upsampled to the final resolution."""
    images = G_ema(z, c, full_resolution=True)
    save_png(path, make_grid(to_uint8(images), cols=grid_size))


def _grid_inputs(
    G: PGGANGenerator, dataset: Any, count: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Fixed latents (and labels) for the sample grids and matching reals; independent of the loop RNG."""
    gen = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(count, G.z_dim, generator=gen).to(device)
    idx = torch.randint(len(dataset), (count,), generator=gen).tolist()
    items = [dataset[i] for i in idx]
    reals = torch.from_numpy(np.stack([img for img, _ in items]))
    c = torch.from_numpy(np.stack([lab for _, lab in items])).to(device) if G.c_dim > 0 else None
    return z, c, reals


def _fetch_reals(
    dataset: Any, batch: int, rng: torch.Generator, with_labels: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randint(len(dataset), (batch,), generator=rng).tolist()
    items = [dataset[i] for i in idx]
    images = torch.from_numpy(np.stack([img for img, _ in items]))
    labels = torch.from_numpy(np.stack([lab for _, lab in items]).astype(np.float32))
    if not with_labels:
        labels = labels[:, :0]
    return images, labels


def _random_labels(dataset: Any, batch: int, rng: torch.Generator, with_labels: bool) -> torch.Tensor:
    if not with_labels:
        return torch.zeros(batch, 0)
    idx = torch.randint(len(dataset), (batch,), generator=rng).tolist()
    return torch.from_numpy(np.stack([dataset[i][1] for i in idx]).astype(np.float32))


# ------------------------------------------------------------------------------------------------------------
# The loop


@dataclass(frozen=True)
class ProgressiveResult:
    """What a (possibly stopped) run produced."""

    run_dir: Path
    cur_nimg: int
    finished: bool
    last_snapshot: Path | None
    grids: tuple[Path, ...]
    seconds: float


def _build_networks(
    config: ProgressiveTrainConfig, dataset: Any
) -> tuple[PGGANGenerator, PGGANDiscriminator]:
    preset = get_preset(config.model)
    if preset.G_class is not PGGANGenerator:
        raise UserInputError(
            f"Progressive training needs a PGGAN model; {config.model!r} is {preset.G_class.__name__}."
        )
    shape = {
        "img_resolution": dataset.resolution,
        "img_channels": dataset.num_channels,
        "c_dim": dataset.label_dim if config.use_labels else 0,
    }
    G = create_model(config.model, net="G", **shape)
    D = create_model(config.model, net="D", **shape)
    return G, D  # type: ignore[return-value]


def run_progressive_training(
    config: ProgressiveTrainConfig,
    *,
    run_dir: str | os.PathLike,
    dataset: Any = None,
    resume: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    stop_at_kimg: float | None = None,
    log: Callable[[str], None] = print,
) -> ProgressiveResult:
    """Train a PGGAN with progressive growing; see the module docstring for the outputs.

    Args:
        config: the run's configuration (:func:`progressive_config`).
        run_dir: output directory (created; may be a new directory when resuming).
        dataset: an opened dataset (``styleforge.data.open_dataset`` contract); ``None`` opens
            ``config.data``.
        resume: continue from a ``training_state.pt`` (or a directory holding one) written by this function
            with the same config.
        device: torch device.
        stop_at_kimg: stop once this many thousand images are done (a snapshot is written); before the
            schedule's end it stops early, beyond it training continues at the final resolution. ``None``: stop
            at the end of the schedule (or at ``schedule.total_kimg``).
        log: receives one line per event (progress ticks, grids, snapshots).
    """
    t_start = time.time()
    device = torch.device(device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if dataset is None:
        from styleforge.data import open_dataset

        dataset = open_dataset(config.data, use_labels=config.use_labels, xflip=config.xflip)
    if config.use_labels and not dataset.has_labels:
        raise UserInputError(f"use_labels is on but the dataset {dataset.name!r} has no labels; turn it off.")

    torch.manual_seed(config.seed)  # network initialisation only; the loop draws from `rng`
    G, D = _build_networks(config, dataset)
    G, D = G.to(device).train(), D.to(device).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    rng = torch.Generator().manual_seed(config.seed)
    run = _Run(G, D, G_ema, _make_optimizer(G, config), _make_optimizer(D, config), rng)
    if resume is not None:
        _restore(run, resume, config)
        log(f"resumed at {run.cur_nimg} images (stage {run.G.current_resolution}px, alpha {run.G.alpha:.3f})")
    if not (run_dir / "config.json").exists():
        atomic_write_json(run_dir / "config.json", {"kind": STATE_KIND, **config.to_dict()})

    schedule, final_res = config.schedule, G.img_resolution
    end_nimg = total_images(schedule, final_res)
    # stop_at_kimg may also lie beyond the schedule: training then goes on at the final resolution
    stop_nimg = end_nimg if stop_at_kimg is None else int(round(stop_at_kimg * 1000))
    tick_nimg = max(1, int(round(config.tick_kimg * 1000)))
    with_labels = G.c_dim > 0
    grid_count = config.grid_size**2
    grid_z, grid_c, grid_reals = _grid_inputs(G, dataset, grid_count, config.seed, device)
    if not (run_dir / "reals.png").exists():
        reals_grid = make_grid(to_uint8(prepare_reals(grid_reals, final_res, 1.0)), config.grid_size)
        save_png(run_dir / "reals.png", reals_grid)
    grids: list[Path] = []
    last_snapshot: Path | None = None
    log_file = run_dir / "log.txt"

    def emit(line: str) -> None:
        log(line)
        with open(log_file, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    tick_time = time.time()
    while run.cur_nimg < stop_nimg:
        stage = stage_at(run.cur_nimg, schedule, final_res)
        if stage.phase != run.last_phase:
            if stage.fading and config.reset_optimizer_on_grow and run.last_phase >= 0:
                run.opt_G = _make_optimizer(G, config)
                run.opt_D = _make_optimizer(D, config)
            if run.last_phase >= 0 or resume is None:
                what = "fade in" if stage.fading else "stabilise"
                emit(f"phase {stage.phase}: {what} {stage.resolution}px at {run.cur_nimg} images")
            run.last_phase = stage.phase
        _set_stage(stage, G, D, G_ema)
        batch = schedule.batch_size(stage.resolution)

        # Discriminator step.
        images, real_c = _fetch_reals(dataset, batch, rng, with_labels)
        reals = prepare_reals(images, stage.resolution, stage.alpha).to(device)
        real_c = real_c.to(device)
        z = torch.randn(batch, G.z_dim, generator=rng).to(device)
        fake_c = _random_labels(dataset, batch, rng, with_labels).to(device)
        mix = torch.rand(batch, 1, 1, 1, generator=rng).to(device)
        D.requires_grad_(True)
        loss_D, stats = wgan_gp_losses(G, D, reals, real_c, z, fake_c, mix, config.loss)
        run.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        run.opt_D.step()

        # Generator step.
        z = torch.randn(batch, G.z_dim, generator=rng).to(device)
        fake_c = _random_labels(dataset, batch, rng, with_labels).to(device)
        D.requires_grad_(False)
        loss_G = generator_loss(G, D, z, fake_c, config.loss)
        run.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        run.opt_G.step()
        update_ema(G_ema, G, config.ema_beta)
        if not (math.isfinite(loss_D.item()) and math.isfinite(loss_G.item())):
            raise UserInputError(
                f"The loss became {loss_D.item()} (D) / {loss_G.item()} (G) at {run.cur_nimg} images; "
                "lower the learning rate or check the data."
            )
        run.stats = {"loss_D": loss_D.item(), "loss_G": loss_G.item(), **stats}
        run.cur_nimg += batch

        next_stage = stage_at(run.cur_nimg, schedule, final_res)
        resolution_done = next_stage.phase != stage.phase and not stage.fading
        stopping = run.cur_nimg >= stop_nimg
        periodic = False
        if run.cur_nimg >= run.tick_start_nimg + tick_nimg or resolution_done:
            now = time.time()
            s = run.stats
            emit(
                f"tick {run.cur_tick} kimg {run.cur_nimg / 1000:.1f} res {stage.resolution} "
                f"alpha {stage.alpha:.3f} "
                f"loss_D {s['loss_D']:.3f} loss_G {s['loss_G']:.3f} D_real {s['D_real']:.3f} "
                f"D_fake {s['D_fake']:.3f} |grad| {s['grad_norm']:.3f} sec/tick {now - tick_time:.1f}"
            )
            record = {"tick": run.cur_tick, "kimg": run.cur_nimg / 1000, "resolution": stage.resolution,
                      "alpha": stage.alpha, "sec_per_tick": now - tick_time, **s}
            with open(run_dir / "stats.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            tick_time = now
            run.cur_tick += 1
            run.tick_start_nimg = run.cur_nimg
            periodic = config.snapshot_ticks > 0 and run.cur_tick % config.snapshot_ticks == 0
        if resolution_done or (stopping and not stage.fading):
            grid_path = run_dir / f"fakes_res{stage.resolution}.png"
            save_sample_grid(G_ema, grid_z, grid_c, grid_path, config.grid_size)
            grids.append(grid_path)
            emit(f"sample grid {grid_path.name}")
        if resolution_done or periodic or stopping:
            last_snapshot = _save_snapshot(run, run_dir, config, emit)

    finished = run.cur_nimg >= end_nimg  # reached the end of the schedule (or schedule.total_kimg)
    seconds = time.time() - t_start
    emit(f"{'finished' if finished else 'stopped'} at {run.cur_nimg} images after {seconds:.1f} s")
    return ProgressiveResult(run_dir, run.cur_nimg, finished, last_snapshot, tuple(grids), seconds)

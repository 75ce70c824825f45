"""Training configuration: frozen dataclasses, presets per ``--cfg`` and resolution, strict JSON round trip.

:func:`make_train_config` turns the few things a user gives (config name, data, kimg, batch, ...) into a
complete :class:`TrainConfig` with the paper defaults filled in; ``run_dir/config.json`` holds its
``to_dict()``, and :func:`train_config_from_dict` rebuilds it (unknown keys are errors).

Defaults (StyleGAN2 paper config F as trained with the StyleGAN3 code base; StyleGAN3 paper appendix D):

====================  ==============  ==============  ==================
                      stylegan2       stylegan3-t     stylegan3-r
====================  ==============  ==============  ==================
G / D learning rate   0.002 / 0.002   0.0025 / 0.002  0.0025 / 0.002
Adam betas, eps       (0, 0.99), 1e-8
R1 gamma              ``0.0002 * resolution**2 / batch`` unless ``--gamma`` (ADA paper heuristic)
R1 lazy interval      16 minibatches (lr and betas corrected by 16/17)
path length           weight 2, interval 4, batch / 2, decay 0.01  |  off for StyleGAN3
style mixing          0.9             0               0
D input blur          none            none            sigma 10 px fading out over ``batch * 200 / 32`` kimg
G EMA                 half-life ``batch * 10 / 32`` kimg, ramp-up 0.05
ADA                   target 0.6, adjusted every 4 minibatches, ``ada_kimg`` 500, pipeline 'bgc'
====================  ==============  ==============  ==================

Fine-tuning from a network (``--resume network.pkl`` without a training state) uses the official transfer
defaults: ``ada_kimg`` 100, no EMA ramp-up, no StyleGAN3-R blur (:func:`apply_transfer_defaults`).

PGGAN (``--cfg pggan*``) shares :class:`TrainConfig`; its recipe settings are in :class:`ProgressiveConfig`
(growth schedule, WGAN-GP, Adam, per-step EMA) and ``loss``/``augment`` are ``None``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from styleforge.models.base import config_from_dict
from styleforge.training.xl_options import XLConfig, make_xl_train_config
from styleforge.utils.errors import UserInputError

__all__ = [
    "GrowthSchedule",
    "WGANGPConfig",
    "ProgressiveConfig",
    "OptimConfig",
    "LossConfig",
    "AugmentConfig",
    "TrainConfig",
    "TRAIN_CONFIGS",
    "make_train_config",
    "train_config_from_dict",
    "default_gamma",
    "apply_transfer_defaults",
    "apply_flags",
    "capacity_overrides",
    "progressive_phases",
    "progressive_total_images",
    "SCHEDULE_FIELDS",
]

#: Minibatches between R1 steps (lazy regularisation, StyleGAN2 section 3.1).
R1_INTERVAL = 16
#: Minibatches between path-length steps.
PL_INTERVAL = 4
#: Path-length weight w_pl of the official StyleGAN2 configuration.
PL_WEIGHT = 2.0
#: Decay of the running mean a of the path lengths.
PL_DECAY = 0.01
#: The path-length step uses batch / PL_BATCH_SHRINK samples.
PL_BATCH_SHRINK = 2
#: Probability that an image is generated from two latents (style mixing regularisation).
STYLE_MIXING_PROB = 0.9
#: StyleGAN3-R: initial sigma (pixels) of the Gaussian blur of every image D sees.
BLUR_INIT_SIGMA = 10.0
#: ADA defaults (paper section 3): target of r_t, adjustment interval, kimg for p to go from 0 to 1.
ADA_TARGET, ADA_INTERVAL, ADA_KIMG = 0.6, 4, 500.0
#: G EMA half-life per 32 images of batch, in kimg, and the ramp-up factor.
EMA_KIMG_PER_32, EMA_RAMPUP = 10.0, 0.05
#: Discriminator learning rate of every configuration.
D_LR = 0.002
#: Scale of the R1 gamma heuristic gamma = GAMMA_SCALE * resolution^2 / batch (ADA paper, appendix D).
GAMMA_SCALE = 0.0002
#: ADA speed when fine-tuning from a network (official transfer-learning default).
TRANSFER_ADA_KIMG = 100.0
#: Consecutive minibatches with non-finite losses after which training stops.
NONFINITE_PATIENCE = 10
#: Fields that only change the schedule of a run: they may differ when resuming (and are logged).
SCHEDULE_FIELDS = ("kimg", "tick_kimg", "snap", "image_snap", "metrics", "outdir", "ops_impl", "nonfinite_patience",
                   "workers", "allow_tf32", "cudnn_benchmark", "xl.kimg_per_stage")
#: Lowest resolution of a PGGAN (its first block).
PGGAN_BASE_RESOLUTION = 4


@dataclass(frozen=True)
class GrowthSchedule:
    """When a PGGAN grows and with which minibatch (paper appendix A.1; lengths in kimg)."""

    start_resolution: int = PGGAN_BASE_RESOLUTION  # first trained resolution
    stabilize_kimg: float = 800.0  # images per stabilisation phase (paper: 800k)
    fade_kimg: float = 800.0  # images per fade-in phase (paper: 800k)
    # (resolution, minibatch) pairs; the paper: 16 up to 128^2, then 14, 6, 3
    batch_sizes: tuple[tuple[int, int], ...] = ((128, 16), (256, 14), (512, 6), (1024, 3))
    # (resolution, kimg) pairs: length of both phases of that resolution where it differs from the above
    # (cheap low resolutions can train longer on a CPU budget); the paper uses none
    kimg_per_resolution: tuple[tuple[int, float], ...] = ()
    growing: bool = True  # False: train the final resolution from the start (the paper's "direct" baseline)

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
class ProgressiveConfig:
    """The PGGAN recipe: growth schedule, WGAN-GP, optimiser reset on growth and the per-step G EMA."""

    schedule: GrowthSchedule = field(default_factory=GrowthSchedule)
    wgan: WGANGPConfig = field(default_factory=WGANGPConfig)
    reset_optimizer_on_grow: bool = True  # clear Adam moments when a new resolution starts fading in
    ema_beta: float = 0.999  # G_ema decay per minibatch (paper appendix A.1)


@dataclass(frozen=True)
class OptimConfig:
    """Adam settings of one network (the lazy-regularisation correction is applied on top)."""

    lr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8


@dataclass(frozen=True)
class LossConfig:
    """Non-saturating logistic loss and its regularisers.

    Attributes:
        r1_gamma: R1 weight gamma; the penalty is ``gamma / 2 * ||grad_x D(x)||^2`` on real images.
        r1_interval: minibatches between R1 steps (0 = R1 in every D step, no lazy correction).
        pl_weight: path-length weight (0 disables it and the ``Greg`` phase).
        pl_interval: minibatches between path-length steps.
        pl_batch_shrink: the path-length step uses ``batch_gpu // pl_batch_shrink`` samples per round.
        pl_decay: decay of the running mean ``pl_mean`` (a in the paper).
        style_mixing_prob: probability that a chunk's images mix two latents at a random layer.
        style_mixing_per_sample: draw the mix decision and the crossover layer per image instead of once per chunk
            (the official loop draws them once per forward pass).
        pl_mean_update: ``official``: each chunk moves ``pl_mean`` toward its own lengths before its penalty (the
            official formulation); ``after_minibatch``: ``pl_mean`` moves once per minibatch toward the mean over
            all processes, after the penalty used the previous value (keeps N processes bit-equal to one).
        blur_init_sigma: initial sigma of the blur of D's inputs (pixels; 0 = off).
        blur_fade_kimg: the blur fades linearly to 0 over this many kimg (0 = no blur, as the official loss).
    """

    r1_gamma: float = 10.0
    r1_interval: int = R1_INTERVAL
    pl_weight: float = 0.0
    pl_interval: int = PL_INTERVAL
    pl_batch_shrink: int = PL_BATCH_SHRINK
    pl_decay: float = PL_DECAY
    pl_mean_update: str = "official"
    style_mixing_prob: float = 0.0
    style_mixing_per_sample: bool = False
    blur_init_sigma: float = 0.0
    blur_fade_kimg: float = 0.0


@dataclass(frozen=True)
class AugmentConfig:
    """Discriminator augmentation.

    Attributes:
        mode: ``ada`` (adaptive p), ``fixed`` (constant ``p``) or ``noaug``.
        p: initial (``ada``) or constant (``fixed``) probability.
        target: ADA target of r_t = E[sign(D(real))].
        interval: minibatches between adjustments of p.
        ada_kimg: p can move from 0 to 1 in this many kimg.
        pipeline: official pipeline name (``blit``, ``geom``, ``color``, ``filter``, ``noise``, ``cutout``, ``bg``,
            ``bgc``, ``bgcf``, ``bgcfn``, ``bgcfnc``).
    """

    mode: str = "ada"
    p: float = 0.0
    target: float = ADA_TARGET
    interval: int = ADA_INTERVAL
    ada_kimg: float = ADA_KIMG
    pipeline: str = "bgc"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``run_dir/config.json`` holds it and a resumed run is checked against it.

    Attributes:
        cfg: training configuration name (``stylegan2``, ``stylegan3-t``, ``stylegan3-r``, ``pggan``, ``*-tiny``).
        model: model preset of G and D (:func:`styleforge.create_model`); usually equal to ``cfg``.
        data: dataset folder, zip or built-in name.
        resolution: dataset/network resolution (``None``: the dataset's own); ``(W, H)`` crops the data to that
            aspect ratio and trains a non-square network (StyleGAN2/3, StyleGAN-XL).
        cond: condition G and D on the dataset's labels.
        cond_encoding: how the labels are read: ``auto`` (from the data), ``class``, ``multi-label`` or
            ``continuous`` (:mod:`styleforge.data.labels`).
        mem_share: ``--batch-gpu auto`` on a CPU: the share of the free memory the peak RSS may take.
        mirror: add x-flipped copies of the images (metrics still use every image once, unmirrored).
        skip_bad: leave out unreadable images instead of stopping.
        outdir: parent folder of the numbered run directories.
        kimg: length of training in thousands of real images shown to D.
        batch: global minibatch size (all processes together); PGGAN: ``None`` = the growth schedule's sizes.
        batch_gpu: images per forward pass and process (``None``: the process's whole share; smaller values
            accumulate gradients over rounds; ``"auto"``: the largest that fits the device memory, found by probe
            steps before training, see :mod:`styleforge.training.memory_fit`).
        seed: random seed (weights, latents, augmentation, data order).
        tick_kimg: progress/statistics interval in kimg.
        snap: ticks between snapshots (training state + exportable network); 0 = only at the end.
        image_snap: ticks between image grids; 0 = only at the start and end.
        metrics: metric names computed at each snapshot.
        freezed: freeze the first K layers of D (FreezeD).
        ema_kimg: half-life of the G EMA in kimg (StyleGAN; PGGAN uses ``progressive.ema_beta``).
        ema_rampup: EMA ramp-up (half-life at most ``cur_nimg * ema_rampup``), ``None`` = off.
        g_opt, d_opt: Adam settings.
        loss: StyleGAN loss and regularisers (``None`` for PGGAN).
        augment: discriminator augmentation (``None`` for PGGAN).
        progressive: the PGGAN recipe (``None`` for StyleGAN).
        mixed_precision: ``auto`` (float16 in the highest resolutions with conv clamping on CUDA, fp32 on CPU),
            ``on`` or ``off``.
        grid_size: number of fixed-seed images in the progress grids.
        model_overrides: extra fields of the G/D configs (``{"G": {...}, "D": {...}}``).
        ops_impl: implementation of the signal-processing ops (``auto``, ``fast``, ``ref``, ``compile``).
        nonfinite_patience: stop after this many consecutive minibatches with non-finite losses (single ones
            are survived: their gradients are sanitised, as in the official loop).
        init_from: the network the weights were initialised from (fine-tuning), or ``None``.
        workers: data-loader processes per training process (``None``: by core count and dataset size, see
            :func:`styleforge.training.data_stream.default_workers`); the images each chunk sees do not depend on it.
        allow_tf32: CUDA: let matmuls and cuDNN convolutions use TF32 (official: off, for exact float32).
        cudnn_benchmark: CUDA: let cuDNN time its algorithms per shape (official: on; ``--nobench`` turns it off).
        xl: the StyleGAN-XL stages, discriminator and guidance (``None`` for the other recipes).
    """

    cfg: str
    model: str
    data: str
    resolution: int | tuple[int, int] | None = None
    cond: bool = False
    mirror: bool = False
    skip_bad: bool = False
    outdir: str = "runs"
    kimg: float = 25000.0
    batch: int | None = 32
    batch_gpu: int | str | None = None
    seed: int = 0
    tick_kimg: float = 4.0
    snap: int = 50
    image_snap: int = 50
    metrics: tuple[str, ...] = ()
    freezed: int = 0
    ema_kimg: float = 10.0
    ema_rampup: float | None = EMA_RAMPUP
    g_opt: OptimConfig = field(default_factory=OptimConfig)
    d_opt: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig | None = field(default_factory=LossConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    progressive: ProgressiveConfig | None = None
    mixed_precision: str = "auto"
    grid_size: int = 32
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    ops_impl: str = "auto"
    nonfinite_patience: int = NONFINITE_PATIENCE
    init_from: str | None = None
    cond_encoding: str = "auto"
    mem_share: float = 0.5
    workers: int | None = None
    allow_tf32: bool = False
    cudnn_benchmark: bool = True
    xl: XLConfig | None = None

    def __post_init__(self) -> None:
        _check_fit_options(self)
        fixed_gpu = self.batch_gpu if isinstance(self.batch_gpu, int) else None  # "auto" is resolved at the start
        if self.batch is not None and self.batch < 1 or fixed_gpu is not None and fixed_gpu < 1:
            raise UserInputError(f"--batch and --batch-gpu must be positive, got {self.batch}, {self.batch_gpu}.")
        if self.batch is not None and fixed_gpu is not None and self.batch % fixed_gpu != 0:
            raise UserInputError(f"--batch ({self.batch}) must be a multiple of --batch-gpu ({self.batch_gpu}).")
        if self.kimg <= 0 or self.tick_kimg <= 0:
            raise UserInputError(f"--kimg and --tick must be positive, got {self.kimg}, {self.tick_kimg}.")
        if (self.progressive is None) == (self.loss is None):
            raise UserInputError("A training config has either StyleGAN loss settings or a PGGAN recipe, not both.")
        if self.progressive is None and self.batch is None:
            raise UserInputError("--batch is required for StyleGAN configs.")
        if self.augment is not None:
            if self.augment.mode not in ("ada", "fixed", "noaug"):
                raise UserInputError(f"--aug must be ada, fixed or noaug, got {self.augment.mode!r}.")
            if not 0 <= self.augment.p <= 1:
                raise UserInputError(f"--p must be in [0, 1], got {self.augment.p}.")
        if self.mixed_precision not in ("auto", "on", "off"):
            raise UserInputError(f"mixed_precision must be auto, on or off, got {self.mixed_precision!r}.")
        if self.ops_impl not in ("auto", "fast", "ref", "compile"):
            raise UserInputError(f"--ops-impl must be auto, fast, ref or compile, got {self.ops_impl!r}.")
        if self.workers is not None and self.workers < 0:
            raise UserInputError(f"--workers must be >= 0, got {self.workers}.")
        if self.nonfinite_patience < 1:
            raise UserInputError(f"nonfinite_patience must be >= 1, got {self.nonfinite_patience}.")
        if self.loss is not None:
            if self.loss.pl_mean_update not in ("official", "after_minibatch"):
                raise UserInputError(
                    f"pl_mean_update must be 'official' or 'after_minibatch', got {self.loss.pl_mean_update!r}.")
            if self.loss.pl_weight > 0 and fixed_gpu is not None and fixed_gpu < self.loss.pl_batch_shrink:
                raise UserInputError(
                    f"--batch-gpu ({self.batch_gpu}) must be at least pl_batch_shrink ({self.loss.pl_batch_shrink})."
                )

    @property
    def family(self) -> str:
        """``stylegan2``, ``stylegan3`` or ``pggan``."""
        if self.progressive is not None:
            return "pggan"
        return "stylegan3" if self.cfg.startswith("stylegan3") else "stylegan2"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _check_fit_options(cfg: TrainConfig) -> None:
    """``--batch-gpu`` is a number or ``auto``; ``--mem-share`` in (0, 1]; ``--cond`` a known encoding."""
    from styleforge.data.labels import ENCODINGS

    if isinstance(cfg.batch_gpu, str) and cfg.batch_gpu != "auto":
        raise UserInputError(f"--batch-gpu must be a number of images or 'auto', got {cfg.batch_gpu!r}.")
    if not 0 < cfg.mem_share <= 1:
        raise UserInputError(f"--mem-share must be in (0, 1] (a share of the free memory), got {cfg.mem_share}.")
    if cfg.cond_encoding not in ENCODINGS:
        raise UserInputError(f"--cond must be one of {', '.join(ENCODINGS)}, got {cfg.cond_encoding!r}.")


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of :meth:`TrainConfig.to_dict` (strict: unknown keys raise an error listing the valid ones)."""
    return config_from_dict(TrainConfig, data)


def default_gamma(resolution: int, batch: int) -> float:
    """The ADA paper's R1 heuristic ``gamma = 0.0002 * resolution^2 / batch``."""
    return GAMMA_SCALE * resolution**2 / batch


def apply_transfer_defaults(cfg: TrainConfig, network: str) -> TrainConfig:
    """The official fine-tuning defaults for a run that starts from ``network``'s weights (not a training state):
    ADA speed 100 kimg, no EMA ramp-up, no StyleGAN3-R blur."""
    out = dataclasses.replace(cfg, init_from=str(network), ema_rampup=None)
    if out.augment is not None:
        out = dataclasses.replace(out, augment=dataclasses.replace(out.augment, ada_kimg=TRANSFER_ADA_KIMG))
    if out.loss is not None and out.xl is None:  # the official StyleGAN-XL resume keeps its blur schedule
        out = dataclasses.replace(out, loss=dataclasses.replace(out.loss, blur_init_sigma=0.0))
    return out


# Training configuration name -> (model preset, family settings).
TRAIN_CONFIGS: dict[str, dict[str, Any]] = {
    "stylegan2": dict(model="stylegan2", kimg=25000.0, g_lr=0.002, tick=4.0, snap=50, batch=32),
    "stylegan2-64": dict(model="stylegan2-64", kimg=25000.0, g_lr=0.002, tick=4.0, snap=50, batch=32),
    "stylegan3-t": dict(model="stylegan3-t", kimg=25000.0, g_lr=0.0025, tick=4.0, snap=50, batch=32),
    "stylegan3-r": dict(model="stylegan3-r", kimg=25000.0, g_lr=0.0025, tick=4.0, snap=50, batch=32),
    "stylegan2-tiny": dict(model="stylegan2-tiny", kimg=200.0, g_lr=0.002, tick=1.0, snap=10, batch=16),
    "stylegan3-t-tiny": dict(model="stylegan3-t-tiny", kimg=200.0, g_lr=0.0025, tick=1.0, snap=10, batch=16),
    "stylegan3-r-tiny": dict(model="stylegan3-r-tiny", kimg=200.0, g_lr=0.0025, tick=1.0, snap=10, batch=16),
    # PGGAN: the paper's schedule; lr 0.001 for both networks, Adam (0, 0.99).
    "pggan": dict(model="pggan", kimg=None, g_lr=0.001, d_lr=0.001, tick=4.0, snap=50, batch=None,
                  progressive=ProgressiveConfig()),
    # 4 -> 8 -> 16 -> 32 on emoji in a few CPU minutes: short phases (longer at the cheap 4x4 and 8x8),
    # minibatch 16, faster EMA.
    "pggan-tiny": dict(model="pggan-tiny", kimg=None, g_lr=0.001, d_lr=0.001, tick=2.0, snap=1000, batch=None,
                       progressive=ProgressiveConfig(
                           schedule=GrowthSchedule(stabilize_kimg=6.0, fade_kimg=6.0, batch_sizes=((32, 16),),
                                                   kimg_per_resolution=((4, 12.0), (8, 8.0))),
                           ema_beta=0.99)),
    # StyleGAN-XL: the official train.py sizes (G channel_base/max doubled from --cbase 32768 / --cmax 512).
    "stylegan-xl": dict(model="stylegan-xl-stem", kimg=25000.0, g_lr=0.0025, tick=4.0, snap=50, batch=64,
                        xl=XLConfig(), G_overrides=dict(channel_base=65536, channel_max=1024)),
    # Tests: the tiny stem (320-wide class embedding, to take EfficientNet-lite0 features), the tiny projected
    # D, 4 head layers per stage, lite0 reading 32 px images for the class embedding.
    "stylegan-xl-tiny": dict(model="stylegan-xl-stem-tiny", kimg=200.0, g_lr=0.0025, tick=1.0, snap=10, batch=16,
                             xl=XLConfig(syn_layers=6, head_layers=4, d_tiny=True, embedding_resolution=32),
                             G_overrides=dict(embed_dim=320)),
}

def _refuse(cfg: str, given: dict[str, Any]) -> None:
    bad = [k for k, v in given.items() if v is not None]
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in bad)
        raise UserInputError(f"--cfg {cfg} does not use {flags}: PGGAN trains with WGAN-GP and no augmentation. "
                             "Leave these options out.")


def make_train_config(
    cfg: str,
    data: str,
    *,
    resolution: int | None = None,
    kimg: float | None = None,
    batch: int | None = None,
    batch_gpu: int | None = None,
    gamma: float | None = None,
    aug: str | None = None,
    p: float | None = None,
    target: float | None = None,
    aug_pipe: str | None = None,
    tick: float | None = None,
    snap: int | None = None,
    image_snap: int | None = None,
    gamma_resolution: int | None = None,
    glr: float | None = None,
    dlr: float | None = None,
    freezed: int | None = None,
    no_growing: bool = False,
    **kwargs: Any,
) -> TrainConfig:
    """A complete :class:`TrainConfig` for ``cfg`` with every default resolved.

    Args:
        cfg: a name of :data:`TRAIN_CONFIGS`.
        data: dataset spec.
        resolution: resize the data to this resolution (``None``: the data's own).
        kimg, batch, batch_gpu, gamma, aug, p, target, aug_pipe, tick, snap, image_snap, freezed: as the CLI
            options (``None``: the configuration's default). Options a configuration cannot use raise an error.
        gamma_resolution: resolution for the gamma heuristic when ``resolution`` is ``None`` (256 if unknown).
        glr, dlr: G and D learning rates (default: per ``cfg``).
        no_growing: PGGAN only: train the final resolution from the start for as many images as the schedule.
        **kwargs: any other :class:`TrainConfig` field (``cond``, ``mirror``, ``seed``, ``metrics``, ...).
    """
    if cfg not in TRAIN_CONFIGS:
        raise UserInputError(f"Unknown --cfg {cfg!r}; choose one of {', '.join(TRAIN_CONFIGS)}.")
    preset = TRAIN_CONFIGS[cfg]
    valid = {f.name for f in dataclasses.fields(TrainConfig)} | {"loss_overrides", "xl_options"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise UserInputError(f"Unknown training option(s) {unknown}; valid: {', '.join(sorted(valid))}.")
    if "model_overrides" in kwargs:
        kwargs["model_overrides"] = _checked_overrides(preset["model"], kwargs["model_overrides"] or {})
    tick = preset["tick"] if tick is None else tick
    snap = preset["snap"] if snap is None else snap
    common = dict(cfg=cfg, model=preset["model"], data=data, resolution=resolution, batch_gpu=batch_gpu,
                  tick_kimg=tick, snap=snap, image_snap=snap if image_snap is None else image_snap,
                  g_opt=OptimConfig(lr=preset["g_lr"] if glr is None else glr),
                  d_opt=OptimConfig(lr=preset.get("d_lr", D_LR) if dlr is None else dlr))
    if "xl" in preset:
        return make_xl_train_config(preset, common, kimg, batch, dict(
            gamma=gamma, aug=aug, p=p, target=target, aug_pipe=aug_pipe, freezed=freezed, no_growing=no_growing),
            kwargs)
    if "progressive" in preset:
        _refuse(cfg, dict(gamma=gamma, aug=aug, p=p, target=target, aug_pipe=aug_pipe, freezed=freezed or None))
        return _progressive_config(preset, common, kimg, batch, no_growing, resolution or gamma_resolution, kwargs)
    if no_growing:
        raise UserInputError(f"--no-growing is a PGGAN option; --cfg {cfg} does not grow.")
    batch = batch or preset["batch"]
    res_for_gamma = (max(resolution) if isinstance(resolution, tuple) else resolution) or gamma_resolution or 256
    gamma = default_gamma(res_for_gamma, batch) if gamma is None else gamma
    is_sg3 = cfg.startswith("stylegan3")
    is_r = cfg.startswith("stylegan3-r")
    loss = LossConfig(
        r1_gamma=gamma,
        pl_weight=0.0 if is_sg3 else PL_WEIGHT,
        style_mixing_prob=0.0 if is_sg3 else STYLE_MIXING_PROB,
        blur_init_sigma=BLUR_INIT_SIGMA if is_r else 0.0,
        blur_fade_kimg=batch * 200 / 32 if is_r else 0.0,
        **kwargs.pop("loss_overrides", {}),
    )
    aug = aug or "ada"
    augment = AugmentConfig(mode=aug, p=(p or 0.0) if aug != "noaug" else 0.0,
                            target=ADA_TARGET if target is None else target, pipeline=aug_pipe or "bgc")
    overrides = dict(kwargs.pop("model_overrides", {}) or {})
    if is_sg3:
        # StyleGAN3's magnitude EMA decays with the batch size: half-life of 20k images.
        g = dict(overrides.get("G", {}))
        g.setdefault("magnitude_ema_beta", 0.5 ** (batch / 20_000))
        overrides["G"] = g
    return TrainConfig(**common, kimg=kimg if kimg is not None else preset["kimg"], batch=batch,
                       ema_kimg=batch * EMA_KIMG_PER_32 / 32, loss=loss, augment=augment,
                       model_overrides=overrides, freezed=freezed or 0, **kwargs)


#: Override keys that --fp32 adds; networks that are always float32 (PGGAN) simply do not have them.
_FP32_KEYS = {"num_fp16_res": 0, "conv_clamp": None}
#: Model config field -> the CLI flag that sets it, for error messages.
_OVERRIDE_FLAGS = {"channel_base": "--cbase", "channel_max": "--cmax", "mapping_layers": "--map",
                   "mbstd_group_size": "--mbstd-group", "num_fp16_res": "--fp32", "conv_clamp": "--fp32"}


def _checked_overrides(model: str, overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Refuse G/D overrides that the model preset does not have, naming the flag (before any run starts)."""
    from styleforge.models.registry import get_preset

    preset = get_preset(model)
    out = {}
    for net, values in overrides.items():
        conf = preset.G_config if net == "G" else preset.D_config
        fields = {f.name for f in dataclasses.fields(conf)}
        kept = {k: v for k, v in values.items() if k in fields or not (k in _FP32_KEYS and _FP32_KEYS[k] == v)}
        unknown = sorted(set(kept) - fields)
        if unknown:
            named = ", ".join(f"{_OVERRIDE_FLAGS.get(k, k)} ({k})" for k in unknown)
            raise UserInputError(f"The {net} of {model!r} has no {named}; leave it out for this --cfg.")
        if kept:
            out[net] = kept
    return out


def _progressive_config(preset: dict[str, Any], common: dict[str, Any], kimg: float | None, batch: int | None,
                        no_growing: bool, data_resolution: int | None, kwargs: dict[str, Any]) -> TrainConfig:
    recipe: ProgressiveConfig = kwargs.pop("progressive", None) or preset["progressive"]
    schedule = recipe.schedule
    if batch is not None:  # one minibatch size at every resolution
        schedule = dataclasses.replace(schedule, batch_sizes=((PGGAN_BASE_RESOLUTION, batch),))
    if no_growing:
        schedule = dataclasses.replace(schedule, growing=False)
    recipe = dataclasses.replace(recipe, schedule=schedule)
    if kimg is None:  # the whole schedule (the same number of images with --no-growing)
        if data_resolution is None:
            raise UserInputError("The length of a PGGAN schedule depends on the resolution: give --resolution "
                                 "or --kimg.")
        kimg = progressive_total_images(schedule, data_resolution) / 1000
    return TrainConfig(**common, kimg=kimg, batch=batch, loss=None, augment=None, progressive=recipe,
                       ema_rampup=None, **kwargs)


def progressive_phases(schedule: GrowthSchedule, final_resolution: int) -> list[tuple[int, bool, int]]:
    """``[(resolution, fading, num_images), ...]`` for every phase up to the final stabilisation."""
    override = dict(schedule.kimg_per_resolution)

    def images(res: int, kimg: float) -> int:
        return int(round(override.get(res, kimg) * 1000))

    phases = [(schedule.start_resolution, False, images(schedule.start_resolution, schedule.stabilize_kimg))]
    res = schedule.start_resolution * 2
    while res <= final_resolution:
        phases.append((res, True, images(res, schedule.fade_kimg)))
        phases.append((res, False, images(res, schedule.stabilize_kimg)))
        res *= 2
    return phases


def progressive_total_images(schedule: GrowthSchedule, final_resolution: int) -> int:
    """Images of a whole growth schedule (the end of its last stabilisation phase)."""
    return sum(n for _, _, n in progressive_phases(schedule, final_resolution))


def capacity_overrides(cfg: str, cbase: int | None = None, cmax: int | None = None, map_layers: int | None = None,
                       fp32: bool = False, mbstd_group: int | None = None) -> dict[str, dict[str, Any]]:
    """G/D overrides from ``--cbase/--cmax/--map/--fp32/--mbstd-group``, as the official tool derives them.

    StyleGAN3-R doubles G's ``--cbase`` and ``--cmax`` (its 1x1 convolutions need twice the channels; D keeps
    them), so that a ported command gives the official widths. ``--fp32`` turns off the float16 blocks and the
    conv clamping.
    """
    factor = 2 if cfg.startswith(("stylegan3-r", "stylegan-xl")) else 1
    both: dict[str, Any] = {k: v for k, v in (("channel_base", cbase), ("channel_max", cmax)) if v is not None}
    if fp32:
        both.update(num_fp16_res=0, conv_clamp=None)
    g, d = dict(both), dict(both)
    g.update({k: v * factor for k, v in (("channel_base", cbase), ("channel_max", cmax)) if v is not None})
    if map_layers is not None:
        g["mapping_layers"] = map_layers
    if mbstd_group is not None:
        d["mbstd_group_size"] = mbstd_group
    if cfg.startswith("stylegan-xl"):  # the projected D has no capacity options
        return {"G": g} if g else {}
    return {k: v for k, v in (("G", g), ("D", d)) if v}


#: CLI option -> the config field it sets (dotted for nested configs), for applying flags to a saved config.
FLAG_FIELDS: dict[str, str] = {
    "data": "data", "resolution": "resolution", "cond": "cond", "mirror": "mirror", "skip_bad": "skip_bad",
    "outdir": "outdir", "kimg": "kimg", "batch": "batch", "batch_gpu": "batch_gpu", "seed": "seed",
    "tick": "tick_kimg", "snap": "snap", "metrics": "metrics", "freezed": "freezed", "glr": "g_opt.lr",
    "dlr": "d_opt.lr", "gamma": "loss.r1_gamma", "aug": "augment.mode", "p": "augment.p", "target": "augment.target",
    "aug_pipe": "augment.pipeline", "ops_impl": "ops_impl", "cfg": "cfg", "cond_encoding": "cond_encoding",
    "mem_share": "mem_share", "workers": "workers",
    "allow_tf32": "allow_tf32",
}


def _replace_path(obj: Any, path: str, value: Any) -> Any:
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(obj, **{head: value})
    inner = getattr(obj, head)
    if inner is None:
        raise UserInputError(f"This run has no {head} settings, so --{path.split('.')[-1]} does not apply to it.")
    return dataclasses.replace(obj, **{head: _replace_path(inner, rest, value)})


def apply_flags(saved: TrainConfig, flags: dict[str, Any]) -> TrainConfig:
    """The saved configuration of a run with the CLI flags the user gave now applied on top (for resuming).

    Flags that were not given keep the saved values, so ``--resume latest`` alone continues the run exactly.
    The result is checked against ``saved`` by the engine, which refuses changes that alter the run.
    """
    out = saved
    for name, value in flags.items():
        if name == "snap":
            out = dataclasses.replace(out, snap=value, image_snap=value)
        elif name in ("cbase", "cmax", "map_layers", "fp32", "mbstd_group"):
            extra = capacity_overrides(saved.cfg, **{name: value})
            merged = {k: {**out.model_overrides.get(k, {}), **v} for k, v in extra.items()}
            out = dataclasses.replace(out, model_overrides={**out.model_overrides, **merged},
                                      mixed_precision="off" if name == "fp32" and value else out.mixed_precision)
        elif name == "no_growing":
            out = _replace_path(out, "progressive.schedule.growing", not value)
        elif name == "nobench":
            out = dataclasses.replace(out, cudnn_benchmark=not value)
        elif name in FLAG_FIELDS:
            out = _replace_path(out, FLAG_FIELDS[name], value)
        else:
            from styleforge.training.xl_options import apply_xl_flag, is_xl_flag

            if not is_xl_flag(name):
                raise UserInputError(f"--{name.replace('_', '-')} cannot be applied to a saved run.")
            out = apply_xl_flag(out, name, value, kimg_given="kimg" in flags)
    return out

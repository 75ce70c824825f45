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
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from styleforge.models.base import config_from_dict
from styleforge.utils.errors import UserInputError

__all__ = [
    "OptimConfig",
    "LossConfig",
    "AugmentConfig",
    "TrainConfig",
    "TRAIN_CONFIGS",
    "make_train_config",
    "train_config_from_dict",
    "default_gamma",
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
        style_mixing_prob: probability that an image mixes two latents at a random layer.
        blur_init_sigma: initial sigma of the blur of D's inputs (pixels; 0 = off).
        blur_fade_kimg: the blur fades linearly to 0 over this many kimg.
    """

    r1_gamma: float = 10.0
    r1_interval: int = R1_INTERVAL
    pl_weight: float = 0.0
    pl_interval: int = PL_INTERVAL
    pl_batch_shrink: int = PL_BATCH_SHRINK
    pl_decay: float = PL_DECAY
    style_mixing_prob: float = 0.0
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
        pipeline: named set of transforms (``bgc``, ``bg``, ``blit``, ``geom``, ``color``).
    """

    mode: str = "ada"
    p: float = 0.0
    target: float = ADA_TARGET
    interval: int = ADA_INTERVAL
    ada_kimg: float = ADA_KIMG
    pipeline: str = "bgc"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``run_dir/config.json`` holds it.

    Attributes:
        cfg: training configuration name (``stylegan2``, ``stylegan3-t``, ``stylegan3-r``, ``*-tiny``, ...).
        model: model preset of G and D (:func:`styleforge.create_model`); usually equal to ``cfg``.
        data: dataset folder, zip or built-in name.
        resolution: dataset/network resolution (``None``: the dataset's own).
        cond: condition G and D on the dataset's class labels.
        mirror: add x-flipped copies of the images.
        skip_bad: leave out unreadable images instead of stopping.
        outdir: parent folder of the numbered run directories.
        kimg: length of training in thousands of real images shown to D.
        batch: global minibatch size (all processes together).
        batch_gpu: images per forward pass and process (gradient accumulation when smaller than the share).
        seed: random seed (weights, latents, augmentation, data order).
        tick_kimg: progress/statistics interval in kimg.
        snap: ticks between snapshots (training state + exportable network); 0 = only at the end.
        image_snap: ticks between image grids; 0 = only at the start and end.
        metrics: metric names computed at each snapshot.
        freezed: freeze the first K layers of D (FreezeD).
        ema_kimg: half-life of the G EMA in kimg.
        ema_rampup: EMA ramp-up (half-life at most ``cur_nimg * ema_rampup``), ``None`` = off.
        g_opt, d_opt: Adam settings.
        loss: loss and regularisers.
        augment: discriminator augmentation.
        mixed_precision: ``auto`` (float16 in the highest resolutions with conv clamping on CUDA, fp32 on CPU),
            ``on`` or ``off``.
        grid_size: number of fixed-seed images in the progress grids.
        model_overrides: extra fields of the G/D configs (``{"G": {...}, "D": {...}}``).
    """

    cfg: str
    model: str
    data: str
    resolution: int | None = None
    cond: bool = False
    mirror: bool = False
    skip_bad: bool = False
    outdir: str = "runs"
    kimg: float = 25000.0
    batch: int = 32
    batch_gpu: int = 32
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
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mixed_precision: str = "auto"
    grid_size: int = 32
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch < 1 or self.batch_gpu < 1:
            raise UserInputError(f"--batch and --batch-gpu must be positive, got {self.batch}, {self.batch_gpu}.")
        if self.batch % self.batch_gpu != 0:
            raise UserInputError(
                f"--batch ({self.batch}) must be a multiple of --batch-gpu ({self.batch_gpu})."
            )
        if self.kimg <= 0 or self.tick_kimg <= 0:
            raise UserInputError(f"--kimg and --tick must be positive, got {self.kimg}, {self.tick_kimg}.")
        if self.augment.mode not in ("ada", "fixed", "noaug"):
            raise UserInputError(f"--aug must be ada, fixed or noaug, got {self.augment.mode!r}.")
        if not 0 <= self.augment.p <= 1:
            raise UserInputError(f"--p must be in [0, 1], got {self.augment.p}.")
        if self.mixed_precision not in ("auto", "on", "off"):
            raise UserInputError(f"mixed_precision must be auto, on or off, got {self.mixed_precision!r}.")
        if self.loss.pl_weight > 0 and self.batch_gpu < self.loss.pl_batch_shrink:
            raise UserInputError(
                f"--batch-gpu ({self.batch_gpu}) must be at least pl_batch_shrink ({self.loss.pl_batch_shrink})."
            )

    @property
    def family(self) -> str:
        """``stylegan2`` or ``stylegan3``."""
        return "stylegan3" if self.cfg.startswith("stylegan3") else "stylegan2"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of :meth:`TrainConfig.to_dict` (strict: unknown keys raise an error listing the valid ones)."""
    return config_from_dict(TrainConfig, data)


def default_gamma(resolution: int, batch: int) -> float:
    """The ADA paper's R1 heuristic ``gamma = 0.0002 * resolution^2 / batch``."""
    return GAMMA_SCALE * resolution**2 / batch


# Training configuration name -> (model preset, family settings).
TRAIN_CONFIGS: dict[str, dict[str, Any]] = {
    "stylegan2": dict(model="stylegan2", kimg=25000.0, g_lr=0.002, tick=4.0, snap=50, batch=32),
    "stylegan2-64": dict(model="stylegan2-64", kimg=25000.0, g_lr=0.002, tick=4.0, snap=50, batch=32),
    "stylegan3-t": dict(model="stylegan3-t", kimg=25000.0, g_lr=0.0025, tick=4.0, snap=50, batch=32),
    "stylegan3-r": dict(model="stylegan3-r", kimg=25000.0, g_lr=0.0025, tick=4.0, snap=50, batch=32),
    "stylegan2-tiny": dict(model="stylegan2-tiny", kimg=200.0, g_lr=0.002, tick=1.0, snap=10, batch=16),
    "stylegan3-t-tiny": dict(model="stylegan3-t-tiny", kimg=200.0, g_lr=0.0025, tick=1.0, snap=10, batch=16),
    "stylegan3-r-tiny": dict(model="stylegan3-r-tiny", kimg=200.0, g_lr=0.0025, tick=1.0, snap=10, batch=16),
}


def make_train_config(
    cfg: str,
    data: str,
    *,
    resolution: int | None = None,
    kimg: float | None = None,
    batch: int | None = None,
    batch_gpu: int | None = None,
    gamma: float | None = None,
    aug: str = "ada",
    p: float = 0.0,
    target: float = ADA_TARGET,
    tick: float | None = None,
    snap: int | None = None,
    image_snap: int | None = None,
    gamma_resolution: int | None = None,
    glr: float | None = None,
    dlr: float | None = None,
    **kwargs: Any,
) -> TrainConfig:
    """A complete :class:`TrainConfig` for ``cfg`` with every default resolved.

    Args:
        cfg: a name of :data:`TRAIN_CONFIGS`.
        data: dataset spec.
        resolution: resize the data to this resolution (``None``: the data's own).
        kimg, batch, batch_gpu, gamma, aug, p, target, tick, snap, image_snap: as the CLI options.
        gamma_resolution: resolution for the gamma heuristic when ``resolution`` is ``None`` (256 if unknown).
        glr, dlr: G and D learning rates (default: per ``cfg``).
        **kwargs: any other :class:`TrainConfig` field (``cond``, ``mirror``, ``seed``, ``metrics``, ...).
    """
    if cfg not in TRAIN_CONFIGS:
        raise UserInputError(f"Unknown --cfg {cfg!r}; choose one of {', '.join(TRAIN_CONFIGS)} (or pggan*).")
    preset = TRAIN_CONFIGS[cfg]
    batch = batch or preset["batch"]
    batch_gpu = batch_gpu or batch
    res_for_gamma = resolution or gamma_resolution or 256
    gamma = default_gamma(res_for_gamma, batch) if gamma is None else gamma
    is_sg3 = cfg.startswith("stylegan3")
    is_r = cfg.startswith("stylegan3-r")
    loss = LossConfig(
        r1_gamma=gamma,
        pl_weight=0.0 if is_sg3 else PL_WEIGHT,
        style_mixing_prob=0.0 if is_sg3 else STYLE_MIXING_PROB,
        blur_init_sigma=BLUR_INIT_SIGMA if is_r else 0.0,
        blur_fade_kimg=batch * 200 / 32 if is_r else 0.0,
    )
    augment = AugmentConfig(mode=aug, p=p if aug != "noaug" else 0.0, target=target)
    overrides = dict(kwargs.pop("model_overrides", {}) or {})
    if is_sg3:
        # StyleGAN3's magnitude EMA decays with the batch size: half-life of 20k images.
        g = dict(overrides.get("G", {}))
        g.setdefault("magnitude_ema_beta", 0.5 ** (batch / 20_000))
        overrides["G"] = g
    tick = preset["tick"] if tick is None else tick
    snap = preset["snap"] if snap is None else snap
    return TrainConfig(
        cfg=cfg,
        model=preset["model"],
        data=data,
        resolution=resolution,
        kimg=kimg if kimg is not None else preset["kimg"],
        batch=batch,
        batch_gpu=batch_gpu,
        tick_kimg=tick,
        snap=snap,
        image_snap=snap if image_snap is None else image_snap,
        ema_kimg=batch * EMA_KIMG_PER_32 / 32,
        g_opt=OptimConfig(lr=preset["g_lr"] if glr is None else glr),
        d_opt=OptimConfig(lr=D_LR if dlr is None else dlr),
        loss=loss,
        augment=augment,
        model_overrides=overrides,
        **kwargs,
    )

"""Settings of the StyleGAN-XL recipe (:mod:`styleforge.training.stylegan_xl`) that the other recipes do not have.

Kept apart from :mod:`styleforge.training.config` (which imports it for :class:`TrainConfig`'s ``xl`` field) so that
the recipe's module can import the config without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from styleforge.utils.errors import UserInputError

__all__ = ["XLConfig", "HINGE_REDUCTIONS", "CLASS_EMBEDDING_INITS", "STEM_RESOLUTION", "SYN_LAYERS", "HEAD_LAYERS"]

#: official stem resolution of the progressive ladder
STEM_RESOLUTION = 16
#: official ``--syn_layers`` (layers of the stem's synthesis network)
SYN_LAYERS = 14
#: official ``--head_layers`` (new layers of each super-resolution stage)
HEAD_LAYERS = 7
#: ``official``: the D and G hinge losses of a chunk are sums over its samples and feature networks of the mean
#: over each network's logits (what the official code computes); ``mean``: the mean over everything
HINGE_REDUCTIONS = ("official", "mean")
#: ``lite0``: the per-class mean of EfficientNet-lite0's pooled 320-channel features; ``lite0-centered``: those
#: means minus the dataset mean, at unit std; ``random``: as initialised
CLASS_EMBEDDING_INITS = ("lite0", "lite0-centered", "random")
#: the backbones of the official projected discriminator
OFFICIAL_BACKBONES = ("deit_base_distilled", "efficientnet_lite0")


@dataclass(frozen=True)
class XLConfig:
    """The StyleGAN-XL stages, discriminator and guidance of one run.

    Attributes:
        stages: output resolution of each stage this run trains, in order (``(16,)``: the stem alone;
            ``(16, 32, 64)``: the whole ladder; ``(32,)`` with ``path_stem``: one super-resolution stage). Each
            stage after the first multiplies the resolution by 2, 4, 8 or 16.
        kimg_per_stage: length of every stage but the last (one value: the same for all); the last stage runs
            until ``kimg``. Empty with one stage, or with ``advance_on_plateau``.
        path_stem: the network the first stage grows from (a run directory, snapshot or training state;
            its ``G_ema``, as the official ``--path_stem``); ``None``: the first stage is a new stem.
        stem_network: the architecture of ``path_stem``'s generator, read when the run is configured, so that
            a resumed run needs neither the file nor its path (the training state holds the stem's weights).
        syn_layers: layers of a new stem's synthesis network (official ``--syn_layers``).
        head_layers: new layers of each super-resolution stage (official ``--head_layers``).
        backbones: feature networks of the projected discriminator.
        deit_weights: timm-layout DeiT-base distilled weights for D (``None``: EfficientNet-lite0 only).
        d_tiny: the projected discriminator's tiny test configuration (random EfficientNet-lite0 at 64 px), unless
            ``d_feature_resolution`` is given.
        d_feature_resolution: resize images to this size for EfficientNet-lite0-only discriminators instead of
            the official 224 (heads sized for it): a cheaper D with the pretrained features, for small CPU runs.
            It takes precedence over ``d_tiny``, so ``--cfg stylegan-xl-tiny --d-feature-res 64`` trains against
            the pretrained features, not the random test backbone.
        hinge_reduction: one of :data:`HINGE_REDUCTIONS`.
        cls_weight: weight of the classifier-guidance cross-entropy in G's loss, from the first
            super-resolution stage of a conditional run (official default 0).
        classifier_weights: DeiT-small distilled weights for the guidance classifier (``None``: the
            EfficientNet-lite0 ImageNet classifier).
        class_embedding: how a new conditional stem's class embedding starts (:data:`CLASS_EMBEDDING_INITS`):
            ``lite0`` (official) the per-class mean EfficientNet-lite0 features; ``lite0-centered`` (ours) those
            means minus the dataset mean, scaled to unit standard deviation (the class-specific part; for sets
            whose class means are nearly alike); ``random`` a standard normal table.
        embedding_resolution: images are resized to this size before EfficientNet-lite0 reads them for the
            class embedding (224: the classifier's training size).
        pl_start_kimg: path-length regularisation starts after this many kimg of the stem's stage (the official
            1,000); never in super-resolution stages.
        d_reg_interval: the official loop's D interval for lazy regularisation: no D regulariser runs, but
            D's Adam keeps the ``16 / 17`` correction of learning rate and betas.
        advance_on_plateau: start the next stage when ``plateau_metric`` (computed at snapshots; the first of
            ``--metrics``; lower is better) has not improved for ``plateau_patience`` evaluations.
    """

    stages: tuple[int, ...] = (STEM_RESOLUTION,)
    kimg_per_stage: tuple[float, ...] = ()
    path_stem: str | None = None
    stem_network: dict[str, Any] | None = None
    syn_layers: int = SYN_LAYERS
    head_layers: int = HEAD_LAYERS
    backbones: tuple[str, ...] = OFFICIAL_BACKBONES
    deit_weights: str | None = None
    d_tiny: bool = False
    d_feature_resolution: int | None = None
    hinge_reduction: str = "official"
    cls_weight: float = 0.0
    classifier_weights: str | None = None
    class_embedding: str = "lite0"
    embedding_resolution: int = 224
    pl_start_kimg: float = 1000.0
    d_reg_interval: int = 16
    advance_on_plateau: bool = False
    plateau_metric: str = "fid50k_full"
    plateau_patience: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(int(s) for s in self.stages))
        object.__setattr__(self, "kimg_per_stage", tuple(float(k) for k in self.kimg_per_stage))
        object.__setattr__(self, "backbones", tuple(self.backbones))
        if not self.stages or any(s < 1 for s in self.stages):
            raise UserInputError(f"--stages must list positive resolutions, got {self.stages}.")
        for a, b in zip(self.stages, self.stages[1:], strict=False):
            if b % a or b // a not in (2, 4, 8, 16):
                raise UserInputError(
                    f"--stages {','.join(map(str, self.stages))}: each stage must multiply the resolution by 2, "
                    f"4, 8 or 16 ({a} -> {b} does not).")
        if self.hinge_reduction not in HINGE_REDUCTIONS:
            raise UserInputError(f"--hinge-reduction must be one of {HINGE_REDUCTIONS}, got {self.hinge_reduction!r}.")
        if self.class_embedding not in CLASS_EMBEDDING_INITS:
            raise UserInputError(
                f"--class-embedding must be one of {CLASS_EMBEDDING_INITS}, got {self.class_embedding!r}.")
        if self.advance_on_plateau and self.kimg_per_stage:
            raise UserInputError("Give either --kimg-per-stage or --advance-on-plateau, not both.")
        if len(self.stages) > 1 and not self.advance_on_plateau and not self.kimg_per_stage:
            raise UserInputError(
                f"--stages {','.join(map(str, self.stages))} trains {len(self.stages)} stages: say how long each "
                "one trains with --kimg-per-stage K (or K1,K2,...), or use --advance-on-plateau with --metrics.")
        if len(self.kimg_per_stage) not in (0, 1, len(self.stages) - 1):
            raise UserInputError(
                f"--kimg-per-stage needs one value or {len(self.stages) - 1} (one per stage but the last), got "
                f"{len(self.kimg_per_stage)}.")
        if any(k <= 0 for k in self.kimg_per_stage):
            raise UserInputError(f"--kimg-per-stage must be positive, got {self.kimg_per_stage}.")
        if self.plateau_patience < 1:
            raise UserInputError(f"plateau_patience must be >= 1, got {self.plateau_patience}.")
        if self.syn_layers < 3 or self.head_layers < 3:
            raise UserInputError(f"--syn-layers and --head-layers must be at least 3, got {self.syn_layers}, "
                                 f"{self.head_layers}.")

    def stage_kimg(self, stage: int) -> float | None:
        """Length of ``stage`` in kimg (``None``: the last stage, or decided by the plateau rule)."""
        if stage >= len(self.stages) - 1 or not self.kimg_per_stage:
            return None
        return self.kimg_per_stage[0] if len(self.kimg_per_stage) == 1 else self.kimg_per_stage[stage]


def stem_description(path_stem: str) -> dict[str, Any]:
    """The architecture (``describe()``) of the generator a stage grows from: ``G_ema`` of ``path_stem``."""
    from styleforge.loading import load
    from styleforge.models.stylegan_xl import StyleGANXLGenerator

    G = load(path_stem).generator
    if not isinstance(G, StyleGANXLGenerator):
        raise UserInputError(
            f"--path-stem {path_stem}: its generator is a {type(G).__name__}; a super-resolution stage grows a "
            "StyleGAN-XL generator (a stem or an earlier stage trained with --cfg stylegan-xl).")
    return G.describe()


def make_xl_train_config(preset: dict[str, Any], common: dict[str, Any], kimg: float | None, batch: int | None,
                         refused: dict[str, Any], kwargs: dict[str, Any]):  # noqa: ANN201 (a TrainConfig)
    """The :class:`~styleforge.training.config.TrainConfig` of a ``--cfg stylegan-xl*`` run (official defaults).

    ``kwargs["xl_options"]`` (a dict of :class:`XLConfig` fields) is applied on top of the preset's settings;
    a ``path_stem`` without ``stages`` trains one 2x super-resolution stage on top of it.
    """
    import dataclasses

    from styleforge.training.config import EMA_KIMG_PER_32, LossConfig, TrainConfig

    bad = [k for k, v in refused.items() if v]
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in bad)
        raise UserInputError(f"--cfg {common['cfg']} does not use {flags}: StyleGAN-XL trains with the hinge loss, "
                             "no R1 and DiffAugment inside its projected discriminator. Leave these options out.")
    options = dict(kwargs.pop("xl_options", None) or {})
    valid = {f.name for f in dataclasses.fields(XLConfig)}
    unknown = sorted(set(options) - valid - {"up_factor"})  # up_factor (--up-factor) becomes stages below
    if unknown:
        raise UserInputError(f"Unknown StyleGAN-XL option(s) {unknown}; valid: {', '.join(sorted(valid))}.")
    xl: XLConfig = preset["xl"]
    if options.get("path_stem"):
        options["stem_network"] = stem_description(options["path_stem"])
        if "stages" not in options:
            stem_res = int(options["stem_network"]["config"]["img_resolution"])
            options["stages"] = (stem_res * int(options.pop("up_factor", 2)),)
    options.pop("up_factor", None)
    if options.get("advance_on_plateau") and "plateau_metric" not in options:
        metrics = tuple(kwargs.get("metrics") or ())
        if not metrics:
            raise UserInputError("--advance-on-plateau watches a metric: give --metrics (e.g. fid50k_full) and "
                                 "--snap (how often it is computed).")
        options["plateau_metric"] = metrics[0]
    xl = dataclasses.replace(xl, **options)
    batch = batch or preset["batch"]
    if kimg is None:
        lengths = [xl.stage_kimg(k) for k in range(len(xl.stages) - 1)]
        kimg = sum(lengths) + preset["kimg"] if lengths and all(v is not None for v in lengths) else preset["kimg"]
    loss = LossConfig(**{**dict(r1_gamma=0.0, r1_interval=xl.d_reg_interval, pl_weight=2.0, pl_interval=4,
                                style_mixing_prob=0.0, blur_init_sigma=2.0, blur_fade_kimg=300.0),
                         **kwargs.pop("loss_overrides", {})})
    overrides = dict(kwargs.pop("model_overrides", {}) or {})
    if overrides.get("D"):
        raise UserInputError(f"--cfg {common['cfg']}: the projected discriminator has no {sorted(overrides['D'])} "
                             "options; leave them out.")
    g = {**preset.get("G_overrides", {}), **overrides.get("G", {})}
    g.setdefault("magnitude_ema_beta", 0.5 ** (batch / 20_000))
    return TrainConfig(**common, kimg=kimg, batch=batch, ema_kimg=batch * EMA_KIMG_PER_32 / 32, loss=loss,
                       augment=None, model_overrides={"G": g}, xl=xl, **kwargs)


#: CLI option -> XLConfig field (``None`` or False when not given)
CLI_OPTIONS = {
    "stages": "stages", "kimg_per_stage": "kimg_per_stage", "path_stem": "path_stem", "up_factor": "up_factor",
    "syn_layers": "syn_layers", "head_layers": "head_layers", "cls_weight": "cls_weight",
    "deit_weights": "deit_weights", "classifier_weights": "classifier_weights",
    "hinge_reduction": "hinge_reduction", "class_embedding": "class_embedding",
    "advance_on_plateau": "advance_on_plateau", "plateau_patience": "plateau_patience",
    "d_feature_resolution": "d_feature_resolution",
}


#: CLI flags whose name is not the option name with dashes
_FLAG_NAMES = {"d_feature_resolution": "--d-feature-res"}


def _numbers(text: str, kind: type, flag: str) -> tuple:
    try:
        return tuple(kind(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise UserInputError(f"{flag} expects comma-separated numbers, got {text!r}.") from None


def xl_cli_options(cfg: str, opts: dict[str, Any]) -> dict[str, Any]:
    """``{"xl_options": {...}}`` for :func:`~styleforge.training.config.make_train_config` from the StyleGAN-XL
    flags of ``styleforge train`` that were given (``{}`` when none); an error when they are given to another
    ``--cfg``, or ``--superres`` without ``--path-stem``."""
    given = {k: opts.get(k) for k in CLI_OPTIONS if opts.get(k) not in (None, False)}
    superres = bool(opts.get("superres"))
    if not cfg.startswith("stylegan-xl"):
        names = sorted(given) + (["superres"] if superres else [])
        if names:
            flags = ", ".join(_FLAG_NAMES.get(n, "--" + n.replace("_", "-")) for n in names)
            raise UserInputError(f"{flags}: StyleGAN-XL options; --cfg {cfg} does not use them.")
        return {}
    if superres != ("path_stem" in given):
        raise UserInputError("--superres and --path-stem go together: --superres --path-stem RUN_OR_SNAPSHOT trains a "
                             "super-resolution stage on top of that network.")
    if "up_factor" in given and "stages" in given:
        raise UserInputError("Give --up-factor (one stage) or --stages (their resolutions), not both.")
    out: dict[str, Any] = {}
    for name, value in given.items():
        if name == "stages":
            value = _numbers(value, int, "--stages")
        elif name == "kimg_per_stage":
            value = _numbers(value, float, "--kimg-per-stage")
        out[CLI_OPTIONS[name]] = value
    return {"xl_options": out} if out else {}


#: flags that fix what a resumed stage is grown from; a resume keeps them (its state holds the stem)
_GROWTH_FLAGS = ("path_stem", "up_factor", "superres", "syn_layers", "head_layers", "deit_weights",
                 "classifier_weights")


def is_xl_flag(name: str) -> bool:
    """Whether ``name`` (a ``styleforge train`` option name) is one of the StyleGAN-XL flags."""
    return name in CLI_OPTIONS or name == "superres"


def apply_xl_flag(cfg: Any, name: str, value: Any, kimg_given: bool) -> Any:
    """The saved :class:`~styleforge.training.config.TrainConfig` ``cfg`` with the StyleGAN-XL flag ``name``
    given on resume applied (the engine then refuses it unless it is a schedule change or allowed by name).

    ``--kimg-per-stage`` is a schedule change, as ``--kimg``: a stage that has not ended yet ends at its new length
    (at once, if it has trained longer already); a stage that has ended keeps its length (the recipe refuses a
    change). Without ``--kimg``, the run's length moves with it when the run goes on into its last stage, so that
    the last stage keeps its length. What a stage grows from (``--path-stem``, ``--up-factor``, layers, weights) stays
    with the run.
    """
    import dataclasses

    flag = _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
    if cfg.xl is None:
        raise UserInputError(f"{flag}: a StyleGAN-XL option; this run is --cfg {cfg.cfg}.")
    if name in _GROWTH_FLAGS:
        raise UserInputError(f"{flag} cannot change on resume: it fixes the networks of the run, which its training "
                             "state holds. Leave it out, or start a new run (without --resume).")
    if name == "stages":
        value = _numbers(value, int, "--stages")
    elif name == "kimg_per_stage":
        value = _numbers(value, float, "--kimg-per-stage")
    new_xl = dataclasses.replace(cfg.xl, **{CLI_OPTIONS[name]: value})
    out = dataclasses.replace(cfg, xl=new_xl)
    if name == "kimg_per_stage" and not kimg_given:
        def fixed(xl: XLConfig) -> float:
            return sum(xl.stage_kimg(k) or 0.0 for k in range(len(xl.stages) - 1))

        if cfg.kimg > fixed(cfg.xl):  # the run reaches its last stage: that stage keeps its length
            out = dataclasses.replace(out, kimg=cfg.kimg + fixed(new_xl) - fixed(cfg.xl))
    return out

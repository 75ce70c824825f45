"""The StyleGAN2/3 recipe: phases Gmain / Greg / Dmain / Dreg, lazy regularisation, G EMA, ADA.

Plugged into :mod:`styleforge.training.engine`, which runs the loop; this file only says which networks and
optimisers exist, what each phase computes (:class:`styleforge.training.losses.StyleGANLoss`) and what extra state
is saved.

Lazy regularisation (StyleGAN2, section 3.1): a regulariser with interval k runs every k-th minibatch with its
loss multiplied by k, and that network's Adam uses ``lr * k / (k + 1)`` and ``betas ** (k / (k + 1))``.

Gradients: every loss is a sum over its chunk divided by the number of samples of the phase in the whole
minibatch, so the accumulated gradient is the minibatch mean however the minibatch is split. (The official loop
sums per-chunk means over rounds, a constant factor that Adam does not see.)
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.nn as nn

from styleforge.data import ImageDataset
from styleforge.models.registry import create_model, get_preset
from styleforge.training.augment import PIPELINES, AdaController, AugmentPipe
from styleforge.training.config import TrainConfig
from styleforge.training.distributed import DistContext
from styleforge.training.ema import ema_beta, update_ema
from styleforge.training.engine import Chunk, Minibatch, Phase
from styleforge.training.losses import StyleGANLoss, phase_denominator
from styleforge.utils.errors import UserInputError

__all__ = ["StyleGANRecipe", "make_optimizer", "model_overrides", "copy_networks_from"]


def model_overrides(cfg: TrainConfig, net: str, ds: ImageDataset, cuda: bool) -> dict[str, Any]:
    """Constructor overrides of G or D for this data and config; unknown fields raise an error naming them."""
    preset = get_preset(cfg.model)
    conf = preset.G_config if net == "G" else preset.D_config
    fields = {f.name for f in dataclasses.fields(conf)}
    out: dict[str, Any] = {"img_resolution": ds.resolution, "img_channels": ds.num_channels, "c_dim": ds.label_dim}
    out.update(data_shape_overrides(cfg.model, net, fields, ds))
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
        flags = {"mbstd_group_size": "--mbstd-group", "channel_base": "--cbase", "channel_max": "--cmax",
                 "mapping_layers": "--map", "conv_clamp": "--fp32"}
        named = [f"{k} ({flags[k]})" if k in flags else k for k in unknown]
        raise UserInputError(f"{cfg.model!r} {net} has no option(s) {named}; valid: {', '.join(sorted(fields))}.")
    return out


def data_shape_overrides(model: str, net: str, fields: set[str], ds: ImageDataset) -> dict[str, Any]:
    """``img_aspect`` of a non-square dataset and the generator's ``cond_encoding``, for networks that have them.

    A square, one-class (or unconditional) dataset adds nothing, so the configs stay those of before."""
    out: dict[str, Any] = {}
    aspect = getattr(ds, "img_aspect", None)
    if aspect is not None:
        if "img_aspect" not in fields:
            raise UserInputError(
                f"The {net} of {model!r} makes square images only, but the data is {ds.width}x{ds.height}. Use "
                "--cfg stylegan2, stylegan3-t/-r or stylegan-xl for non-square data, or prepare a square dataset."
            )
        out["img_aspect"] = aspect
    encoding = getattr(ds, "label_encoding", None)
    if net == "G" and encoding not in (None, "class"):
        if "cond_encoding" not in fields:
            raise UserInputError(f"The generator of {model!r} takes one class per image; {encoding} labels need "
                                 "--cfg stylegan2 or stylegan3-t/-r.")
        out["cond_encoding"] = encoding
    return out


def make_optimizer(params: list[nn.Parameter], lr: float, betas: tuple[float, float], eps: float,
                   reg_interval: int) -> torch.optim.Adam:
    """Adam with the lazy-regularisation correction ``mb_ratio = k / (k + 1)`` (k = 0: no correction)."""
    ratio = reg_interval / (reg_interval + 1) if reg_interval > 0 else 1.0
    b1, b2 = (float(b) for b in betas)  # JSON may turn 0.0 into 0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(b1**ratio, b2**ratio), eps=eps)


def copy_networks_from(path: str, nets: dict[str, nn.Module]) -> None:
    """Start from the weights of an exported snapshot or official pickle (counters start at 0)."""
    from styleforge.loading import load

    loaded = load(path)
    for name, dst in nets.items():
        src = getattr(loaded, name, None)
        if src is None:
            continue
        try:
            dst.load_state_dict(src.state_dict(), strict=True)
        except RuntimeError as e:
            raise UserInputError(
                f"--resume {path}: its {name} does not match the configured network ({str(e).splitlines()[0]}). "
                "Use the same --cfg, resolution and --cond as the run that made it."
            ) from None


class StyleGANRecipe:
    """G, D, G_ema, both Adams, the loss object (``pl_mean``) and ADA; see the module docstring."""

    kind = "stylegan"

    def __init__(self, cfg: TrainConfig, ds: ImageDataset, dev: torch.device) -> None:
        assert cfg.loss is not None and cfg.augment is not None
        self.cfg = cfg
        cuda = dev.type == "cuda"
        self.G = create_model(cfg.model, "G", **model_overrides(cfg, "G", ds, cuda)).to(dev).train()
        self.D = create_model(cfg.model, "D", **model_overrides(cfg, "D", ds, cuda)).to(dev).train()
        for net in (self.G, self.D):
            net.set_ops_impl(cfg.ops_impl)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.augment_pipe, self.ada = self._augment(cfg, dev)
        self.loss = StyleGANLoss(self.G, self.D, cfg.loss, self.augment_pipe, self.ada)
        self.phases = self._phases(cfg)
        self._bufs_before: list[torch.Tensor] = []

    @staticmethod
    def _augment(cfg: TrainConfig, dev: torch.device) -> tuple[AugmentPipe | None, AdaController | None]:
        aug = cfg.augment
        if aug.mode == "noaug":
            return None, None
        if aug.pipeline not in PIPELINES:
            raise UserInputError(f"Unknown --aug-pipe {aug.pipeline!r}; known: {', '.join(PIPELINES)}.")
        pipe = AugmentPipe(PIPELINES[aug.pipeline], p=aug.p).to(dev)
        if aug.mode != "ada":
            return pipe, None
        return pipe, AdaController(pipe, target=aug.target, interval=aug.interval, ada_kimg=aug.ada_kimg,
                                   batch_size=cfg.batch)

    def _phases(self, cfg: TrainConfig) -> list[Phase]:
        """Gmain (+Greg), Dmain (+Dreg); a regulariser with interval 0 joins its main phase (not lazy)."""
        lc = cfg.loss
        use_pl, use_r1 = lc.pl_weight > 0, lc.r1_gamma != 0
        g_reg = lc.pl_interval if use_pl and lc.pl_interval > 0 else 0
        d_reg = lc.r1_interval if use_r1 and lc.r1_interval > 0 else 0
        opt_G = make_optimizer([p for p in self.G.parameters() if p.requires_grad], cfg.g_opt.lr, cfg.g_opt.betas,
                               cfg.g_opt.eps, g_reg)
        opt_D = make_optimizer([p for p in self.D.parameters() if p.requires_grad], cfg.d_opt.lr, cfg.d_opt.betas,
                               cfg.d_opt.eps, d_reg)
        self.opt_G, self.opt_D = opt_G, opt_D
        phases = [Phase("Gmain", self.G, opt_G, 1, 0, ("Gmain", "Greg") if use_pl and not g_reg else ("Gmain",),
                        needs_reals=False)]
        if g_reg:
            phases.append(Phase("Greg", self.G, opt_G, g_reg, 1, ("Greg",), needs_reals=False))
        phases.append(Phase("Dmain", self.D, opt_D, 1, 2, ("Dmain", "Dreg") if use_r1 and not d_reg else ("Dmain",)))
        if d_reg:
            phases.append(Phase("Dreg", self.D, opt_D, d_reg, 3, ("Dreg",)))
        return phases

    # -- the engine's hooks --

    def minibatch_size(self, cur_nimg: int) -> int:
        return self.cfg.batch

    def begin_minibatch(self, mb: Minibatch) -> list[str]:
        self._bufs_before = [b.detach().clone() for b in self.G.buffers() if b.is_floating_point()]
        return []

    def accumulate(self, loss: str, chunk: Chunk, mb: Minibatch, gain: int) -> dict[str, torch.Tensor]:
        denom = phase_denominator(loss, mb.batch, self.cfg.loss, mb.batch_gpu)
        return self.loss.accumulate(loss, chunk.real_img, chunk.real_c, chunk.gen_z, chunk.gen_c, gain=gain,
                                    denom=denom, cur_nimg=mb.cur_nimg)

    def finish_phase(self, phase: Phase, dist_ctx: DistContext) -> None:
        for name in phase.losses:
            self.loss.finish_phase(name, dist_ctx.all_reduce)

    def end_minibatch(self, mb: Minibatch, dist_ctx: DistContext) -> None:
        dist_ctx.merge_buffers(self.G, self._bufs_before)
        update_ema(self.G_ema, self.G, ema_beta(mb.batch, mb.cur_nimg, self.cfg.ema_kimg, self.cfg.ema_rampup))
        if self.ada is not None:
            self.ada.update(dist_ctx.all_reduce)

    def milestone(self, before: int, after: int) -> str | None:
        return None

    def tick_values(self) -> dict[str, float]:
        return {"augment_p": float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0,
                "ada_rt": self.ada.last_rt if self.ada is not None else None,
                "pl_mean": float(self.loss.pl_mean)}

    def state_dict(self) -> dict[str, Any]:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "pl_mean": self.loss.pl_mean.detach().cpu(),
                "augment_p": float(self.augment_pipe.p) if self.augment_pipe is not None else None,
                "ada": self.ada.state_dict() if self.ada is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.loss.pl_mean.copy_(state["pl_mean"].to(self.loss.pl_mean.device))
        if self.augment_pipe is not None and state.get("augment_p") is not None:
            self.augment_pipe.p.fill_(float(state["augment_p"]))
        if self.ada is not None and state.get("ada") is not None:
            self.ada.load_state_dict(state["ada"])

    def load_weights(self, path: str) -> None:
        copy_networks_from(path, {"G": self.G, "D": self.D, "G_ema": self.G_ema})

    def render(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.G_ema(z, c, noise_mode="const")

    def metric_generator(self) -> nn.Module:
        return self.G_ema

    def snapshot_extra(self) -> dict[str, Any]:
        return {"augment_p": float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0}

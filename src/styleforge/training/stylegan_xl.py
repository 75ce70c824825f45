"""The StyleGAN-XL recipe (Sauer et al. 2022) on the shared engine: projected D, hinge loss, stages, guidance.

``styleforge train --cfg stylegan-xl|stylegan-xl-tiny`` runs it through :func:`styleforge.training.loop.train`;
the engine (:mod:`styleforge.training.engine`) owns the run directory, resume, ticks, snapshots, metrics and the
minibatch/round/process split. This file says which networks and optimisers exist in each stage and what the
phases compute. Settings: :class:`styleforge.training.xl_options.XLConfig` (``TrainConfig.xl``).

As the official training (``train.py``, ``training/loss.py`` and ``training_loop.py`` of autonomousvision/
stylegan-xl), by default:

- Phases ``Gmain``, ``Greg`` (path length, every 4 minibatches, only in the stem's stage and only from
  ``pl_start_kimg`` = 1,000 kimg of it, weight 2, without the lazy gain: the official loss never multiplies it),
  ``Dmain``. There is no R1 (``Dreg`` would do nothing and is left out); the Adams keep the official lazy
  corrections (G: interval 4, D: interval 16). Learning rates G 0.0025, D 0.002, betas (0, 0.99), eps 1e-8.
- Hinge loss. D: ``relu(1 + D(G(z)))`` and ``relu(1 - D(x))``; G: ``-D(G(z))``. With
  ``hinge_reduction='official'`` a chunk's loss is, as the official code computes it, the sum over the chunk's
  samples and over D's feature networks of the mean over that network's logits (so about ``batch_gpu * 2``
  times the mean hinge; the classifier-guidance term keeps its official weight against it); ``'mean'`` averages
  over everything. Chunks are averaged, so that N processes equal one process.
- Every image D sees (real and fake) is blurred with sigma ``2 * max(0, 1 - nimg / 300k)`` (``nimg`` counted
  from the start of the stage; each official stage is a run of its own); DiffAugment runs inside D.
- G's synthesis always runs with ``update_emas=False`` (official: magnitude EMAs stay at 1); ``w_avg`` (one per
  class) is updated in the D phase. Style mixing off. G_ema half-life ``batch * 10 / 32`` kimg with ramp-up 0.05.
- A new conditional stem starts its class embedding table from the per-class mean of EfficientNet-lite0's
  pooled 320-channel features of the training images (``class_embeddings.npy`` in the run directory); the
  mapping's ``embed_proj`` projects it to ``z_dim``, and it trains with G.
- Super-resolution stages grow ``G_ema`` of the previous stage (:meth:`StyleGANXLGenerator.grow`): the stem's
  critically sampled layers go, ``head_layers`` new layers and a ToRGB come; the mapping network and the kept
  layers are frozen (official quirk: ``synthesis.input`` stays trainable); D is new. From the first of them, a
  conditional run adds ``cls_weight * CE(classifier(G(z, c)), argmax c)`` to G's loss (official default weight 0).

One run can train several stages (``stages``): after ``kimg_per_stage`` kimg, or when the plateau metric stops
improving (``advance_on_plateau``), the run grows G and starts the next stage; the real images are resized to
each stage's resolution (antialiased bicubic). The training state names the stage, the image count at which
each stage began, and holds the weights of the network the stage grew from, so a resume rebuilds the stage
exactly without the original files.

Non-square data (``W x H``, ``W != H``; not in the official code) trains a non-square ladder: ``--stages`` name
the longer side, the stem gets the data's ``img_aspect`` (32x24 data and ``--stages 16,32``: a 16x12 stem, then
32x24), every stage grows with it, the reals are resized to each stage's ``W x H`` (the aspect kept), and the
projected D reads the non-square images through its official input path (see
:meth:`~styleforge.models.projected_discriminator.ProjectedDiscriminator.backbone_input`). A ``--path-stem``
network must have the data's aspect ratio.
"""

from __future__ import annotations

import copy
import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.data import ImageDataset
from styleforge.models.base import aspect_image_size, image_size, network_from_description
from styleforge.models.registry import get_preset
from styleforge.models.stylegan_xl import StyleGANXLConfig, StyleGANXLGenerator
from styleforge.training.config import TrainConfig
from styleforge.training.distributed import DistContext
from styleforge.training.ema import ema_beta, update_ema
from styleforge.training.engine import Chunk, Minibatch, Phase
from styleforge.training.losses import StyleGANLoss, gaussian_blur, phase_denominator
from styleforge.training.stylegan import copy_networks_from, make_optimizer
from styleforge.utils.errors import UserInputError
from styleforge.utils.io import atomic_write_bytes

__all__ = [
    "StyleGANXLRecipe",
    "hinge_per_sample",
    "class_mean_features",
    "resize_reals",
    "CLASS_EMBEDDINGS_FILE",
]

#: file of the class embeddings computed at the start of a conditional run (``[c_dim, 320]`` float32)
CLASS_EMBEDDINGS_FILE = "class_embeddings.npy"
#: minibatch of the EfficientNet-lite0 pass over the training set
EMBEDDING_BATCH = 32
#: G's lazy-regularisation interval in the official loop (its Adam is corrected by 4/5 even without path length)
G_REG_INTERVAL = 4


# ------------------------------------------------------------------------------------------------------------
# Pieces of one step (pure functions)


def hinge_per_sample(logits: torch.Tensor, groups: list[int], reduction: str) -> torch.Tensor:
    """``[N]``: each sample's share of a hinge term given per-logit values ``[N, L]`` (e.g. ``relu(1 + l)``).

    ``groups`` are the numbers of logits of D's feature networks (summing to ``L``). ``official``: the sum over
    the networks of the mean over each network's logits; ``mean``: the mean over all ``L`` logits.
    """
    if reduction == "mean":
        return logits.mean(dim=1)
    return torch.stack([part.mean(dim=1) for part in logits.split(groups, dim=1)]).sum(dim=0)


def resize_reals(img: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Real images ``[N, C, H, W]`` in [-1, 1] at ``size`` (a side, or ``(W, H)`` for a non-square stage;
    antialiased bicubic; unchanged when already that size)."""
    width, height = (size, size) if isinstance(size, int) else size
    if img.shape[-1] == width and img.shape[-2] == height:
        return img
    return F.interpolate(img, size=(height, width), mode="bicubic", antialias=True, align_corners=False)


@torch.no_grad()
def class_mean_features(ds: ImageDataset, device: torch.device, resolution: int,
                        weights: str | None = None) -> tuple[np.ndarray, list[int]]:
    """``([label_dim, 320] per-class means, images per class)`` of EfficientNet-lite0's globally pooled last
    feature map (blocks up to the 320-channel stage) over every image of ``ds`` (resized to ``resolution`` x
    ``resolution``; a non-square image is stretched to it, as the projected D's official input path does)."""
    from styleforge.feature_nets.efficientnet_lite import load_efficientnet_lite0

    net = load_efficientnet_lite0(weights, device=device)
    sums = torch.zeros(ds.label_dim, 320, dtype=torch.float64, device=device)
    counts = torch.zeros(ds.label_dim, dtype=torch.float64, device=device)
    n = ds.num_images
    for start in range(0, n, EMBEDDING_BATCH):
        idx = range(start, min(start + EMBEDDING_BATCH, n))
        img = torch.from_numpy(np.stack([ds[i][0] for i in idx])).to(device).float() / 127.5 - 1
        if img.shape[1] == 1:
            img = img.expand(-1, 3, -1, -1)
        img = F.interpolate(img[:, :3], size=(resolution, resolution), mode="bilinear", align_corners=False)
        feats = net.features(img)[-1].mean(dim=(2, 3)).double()
        labels = torch.from_numpy(np.stack([ds.get_label(i) for i in idx])).to(device).double()
        sums += labels.T @ feats
        counts += labels.sum(dim=0)
    means = sums / counts.clamp(min=1)[:, None]
    return means.float().cpu().numpy(), [int(c) for c in counts.tolist()]


def centered_class_means(means: np.ndarray, counts: list[int]) -> np.ndarray:
    """Per-class means minus the dataset mean (classes weighted by their images), scaled to unit standard deviation
    over the table: what tells the classes apart. Classes without images stay zero."""
    weights = np.asarray(counts, dtype=np.float64)
    present = weights > 0
    centred = means.astype(np.float64) - (weights @ means) / max(weights.sum(), 1.0)
    centred[~present] = 0.0
    std = centred[present].std() if present.any() else 0.0
    return (centred / std if std > 0 else centred).astype(np.float32)


def _stage_seed(seed: int, stage: int) -> int:
    return int(np.random.SeedSequence([seed, stage, 0x5C1]).generate_state(1, np.uint64)[0] >> 1)


class _StageOutput(nn.Module):
    """G_ema of a stage with the generator call convention of the metrics, upsampled to ``resolution`` (the
    longer side; a non-square G to ``img_width x img_height`` of that size, its aspect kept)."""

    def __init__(self, G: StyleGANXLGenerator, resolution: int) -> None:
        super().__init__()
        self.G, self.resolution = G, resolution
        self.z_dim, self.c_dim, self.img_channels = G.z_dim, G.c_dim, G.img_channels
        self.img_resolution = resolution
        self.img_width, self.img_height = aspect_image_size(resolution, G.config.img_aspect)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        img = self.G(z, c, **kwargs)
        if img.shape[-1] == self.img_width and img.shape[-2] == self.img_height:
            return img
        return F.interpolate(img, size=(self.img_height, self.img_width), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------------------------
# The recipe


class StyleGANXLRecipe:
    """G, the projected D, G_ema, their Adams and ``pl_mean`` of the current stage; see the module docstring."""

    kind = "stylegan-xl"

    def __init__(self, cfg: TrainConfig, ds: ImageDataset, dev: torch.device) -> None:
        assert cfg.xl is not None and cfg.loss is not None
        self.cfg, self.xl, self.ds, self.dev = cfg, cfg.xl, ds, dev
        if max(self.xl.stages) > ds.resolution:
            raise UserInputError(
                f"--stages reach {max(self.xl.stages)} px but the data is {ds.resolution} px; give data of at least "
                "the last stage's resolution (or --resolution).")
        if ds.num_channels != 3:
            raise UserInputError(f"StyleGAN-XL's feature networks read RGB images; {ds.name} has {ds.num_channels} "
                                 "channel(s). Convert the data to RGB.")
        self.stage_starts = [0]  # image count at which each stage began
        self.plateau = {"best": None, "bad": 0, "pending": 0}
        self.class_embeddings: torch.Tensor | None = None
        self.stem: StyleGANXLGenerator | None = None  # the network the current stage grew from
        self.stem_ready = False
        self.classifier: nn.Module | None = None
        self._nimg = 0  # images of the current stage (for the progress line)
        self._pending_start = 0
        self._sn_key: tuple[int, str] | None = None  # (minibatch, phase) whose start _sn_start holds
        self._sn_start: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._notes: list[str] = []  # messages of the network factories, logged at the next minibatch
        if self.xl.path_stem is not None:
            self.stem = network_from_description(self.xl.stem_network).to(dev).eval()
            self._check_stem_aspect(self.stem)
            if Path(self.xl.path_stem).expanduser().exists():
                self._load_stem_file()
        self._build_stage(0)

    # -- networks --

    @property
    def stage(self) -> int:
        return len(self.stage_starts) - 1

    @property
    def resolution(self) -> int:
        return self.xl.stages[self.stage]

    @property
    def superres(self) -> bool:
        """Whether the current stage grew from an earlier network (mapping and stem frozen)."""
        return self.stem is not None

    @property
    def stage_size(self) -> tuple[int, int]:
        """``(W, H)`` of the current stage's images (``(resolution, resolution)`` for square data)."""
        return image_size(self.G)

    def _size_text(self) -> str:
        """The current stage's size for log lines: ``16 px``, or ``16x12 px`` (W x H) for a non-square stage."""
        w, h = self.stage_size
        return f"{w} px" if w == h else f"{w}x{h} px"

    def _check_stem_aspect(self, stem: StyleGANXLGenerator) -> None:
        """A super-resolution stage keeps the aspect ratio of the network it grows from: it must be the data's."""
        def shape(aspect: tuple[int, int] | None) -> str:
            return "square" if aspect is None or aspect[0] == aspect[1] else f"{aspect[0]}:{aspect[1]}"

        theirs, ours = shape(stem.config.img_aspect), shape(self.ds.img_aspect)
        if theirs != ours:
            raise UserInputError(
                f"--path-stem {self.xl.path_stem} makes {theirs} images ({stem.img_width}x{stem.img_height}) but the "
                f"data {self.ds.name} is {ours} ({self.ds.width}x{self.ds.height}); a super-resolution stage keeps "
                "its stem's aspect ratio. Give a stem trained on data of this aspect ratio, or data of the stem's "
                "(--resolution WxH).")

    def _load_stem_file(self) -> None:
        from styleforge.loading import load

        G = load(self.xl.path_stem).generator
        try:
            self.stem.load_state_dict(G.state_dict(), strict=True)
        except RuntimeError as e:
            raise UserInputError(
                f"--path-stem {self.xl.path_stem} no longer has the architecture this run was configured with "
                f"({str(e).splitlines()[0]}).") from None
        self.stem_ready = True

    def _new_stem(self) -> StyleGANXLGenerator:
        conf = get_preset(self.cfg.model).G_config
        fields = {f.name for f in dataclasses.fields(StyleGANXLConfig)}
        values = dict(img_resolution=self.xl.stages[0], img_channels=self.ds.num_channels, c_dim=self.ds.label_dim,
                      num_layers=self.xl.syn_layers)
        if self.ds.img_aspect is not None:
            values["img_aspect"] = self.ds.img_aspect  # the stem at the data's aspect ratio (16x12 for 32x24)
        encoding = getattr(self.ds, "label_encoding", None)
        if encoding not in (None, "class"):
            raise UserInputError(
                f"StyleGAN-XL embeds one class per image (its mapping network reads argmax c), but the labels of "
                f"{self.cfg.data!r} are {encoding}. Use --cfg stylegan2 or stylegan3-t/-r for {encoding} labels, "
                "or write one integer class per image in dataset.json.")
        if self.dev.type != "cuda" and self.cfg.mixed_precision != "on" or self.cfg.mixed_precision == "off":
            values["num_fp16_res"] = 0
        values.update(self.cfg.model_overrides.get("G", {}))
        unknown = sorted(set(values) - fields)
        if unknown:
            raise UserInputError(f"The StyleGAN-XL generator has no option(s) {unknown}.")
        return StyleGANXLGenerator(dataclasses.replace(conf, **values))

    def _grown(self, stem: StyleGANXLGenerator, resolution: int) -> StyleGANXLGenerator:
        up = resolution // stem.img_resolution
        if up * stem.img_resolution != resolution or up not in (2, 4, 8, 16):
            raise UserInputError(
                f"A stage at {resolution} px cannot grow from a {stem.img_resolution} px network (the factor must "
                "be 2, 4, 8 or 16).")
        return stem.grow(self.xl.head_layers, up)

    def _make_D(self, resolution: int, seed: int) -> nn.Module:
        from styleforge.models.projected_discriminator import (
            ProjectedDConfig,
            make_projected_discriminator,
            tiny_projected_d_config,
        )

        c_dim = self.ds.label_dim
        if self.xl.d_tiny and self.xl.d_feature_resolution is None:
            config = tiny_projected_d_config(c_dim)
        elif self.xl.d_feature_resolution is not None:  # also on the tiny preset: the pretrained features
            size = self.xl.d_feature_resolution
            config = ProjectedDConfig(backbones=("efficientnet_lite0",), c_dim=c_dim, feature_resolution=size,
                                      head_nominal_resolution=size)
        else:
            config = ProjectedDConfig(backbones=self.xl.backbones, c_dim=c_dim)
        return make_projected_discriminator(config, resolution, deit_weights=self.xl.deit_weights, seed=seed,
                                            log=self._notes.append)

    def _build_stage(self, stage: int) -> None:
        """Networks, optimisers and phases of ``stage`` (from ``self.stem`` when it has one); seeded by the stage,
        so every process and every resume builds the same networks."""
        res = self.xl.stages[stage]
        with torch.random.fork_rng(devices=[self.dev] if self.dev.type == "cuda" else []):
            torch.manual_seed(_stage_seed(self.cfg.seed, stage))
            G = self._new_stem() if self.stem is None else self._grown(self.stem, res)
            self.G = G.to(self.dev).train()
            self.D = self._make_D(res, _stage_seed(self.cfg.seed, stage) % 2**31).to(self.dev).train()
        for net in (self.G, self.D):
            if hasattr(net, "set_ops_impl"):
                net.set_ops_impl(self.cfg.ops_impl)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self._freeze_stem()
        self.pl_loss = StyleGANLoss(self.G, self.D, dataclasses.replace(self.cfg.loss, style_mixing_prob=0.0))
        cfg = self.cfg
        g_params = [p for p in self.G.parameters() if p.requires_grad]
        d_params = [p for p in self.D.parameters() if p.requires_grad]
        self.opt_G = make_optimizer(g_params, cfg.g_opt.lr, cfg.g_opt.betas, cfg.g_opt.eps, G_REG_INTERVAL)
        self.opt_D = make_optimizer(d_params, cfg.d_opt.lr, cfg.d_opt.betas, cfg.d_opt.eps, self.xl.d_reg_interval)
        self.phases = [Phase("Gmain", self.G, self.opt_G, 1, 0, ("Gmain",), needs_reals=False)]
        if not self.superres and cfg.loss.pl_weight > 0:
            self.phases.append(Phase("Greg", self.G, self.opt_G, cfg.loss.pl_interval, 1, ("Greg",),
                                     needs_reals=False))
        self.phases.append(Phase("Dmain", self.D, self.opt_D, 1, 2, ("Dmain",)))
        self._trainable_G = g_params
        self._groups = self._logit_groups()
        if self.superres and self.xl.cls_weight > 0 and self.ds.label_dim > 0 and self.classifier is None:
            from styleforge.models.projected_discriminator import guidance_classifier

            self.classifier = guidance_classifier(self.xl.classifier_weights).to(self.dev).eval().requires_grad_(False)

    def _freeze_stem(self) -> None:
        """Superres stages train only the new layers (and, official quirk, ``synthesis.input``). The engine turns
        ``requires_grad`` on for the whole of G in G phases, so this runs again at the start of every G pass."""
        if not self.superres:
            return
        kept = self.G.synthesis.layers.__len__() - (self.xl.head_layers + 1)
        self.G.mapping.requires_grad_(False)
        for i, layer in enumerate(self.G.synthesis.layers):
            layer.requires_grad_(i >= kept)

    @torch.no_grad()
    def _logit_groups(self) -> list[int]:
        """Numbers of D's logits per feature network, in the order of its output (a probe on one black image in
        eval mode, which moves neither BatchNorm statistics nor spectral-norm vectors)."""
        D = self.D
        width, height = self.stage_size
        x = torch.zeros(1, 3, height, width, device=self.dev)
        c = torch.zeros(1, self.ds.label_dim, device=self.dev)
        if self.ds.label_dim:
            c[:, 0] = 1
        D.eval()
        try:
            groups = []
            for name, proj in D.features.items():
                feats = proj(D.backbone_input(name, x))
                groups.append(sum(head(f, c).shape[1] for head, f in zip(D.heads[name], feats, strict=True)))
        finally:
            D.train()
        return groups

    def _advance(self) -> str:
        """Grow into the next stage from the current G_ema."""
        old = self._size_text()
        self.stem = copy.deepcopy(self.G_ema).eval().requires_grad_(False)
        self.stem_ready = True
        self.stage_starts.append(self._pending_start)
        self.plateau = {"best": None, "bad": 0, "pending": 0}
        self._build_stage(self.stage)
        return (f"stage {self.stage}: {old} -> {self._size_text()} at {self._pending_start} images "
                f"({self.xl.head_layers} new layers, new projected D, mapping and stem frozen)")

    # -- schedule --

    def stage_nimg(self, cur_nimg: int) -> int:
        """Images shown since the current stage began."""
        return cur_nimg - self.stage_starts[-1]

    def _fixed_boundary(self, stage: int) -> int | None:
        """Image count at which ``stage`` ends under ``kimg_per_stage`` (``None``: last stage or plateau rule)."""
        kimg = self.xl.stage_kimg(stage)
        if kimg is None:
            return None
        return self.stage_starts[stage] + int(round(kimg * 1000))

    def _next_boundary(self) -> int | None:
        if self.xl.advance_on_plateau:
            return self.plateau["pending"] or None
        return self._fixed_boundary(self.stage)

    # -- the engine's hooks --

    def minibatch_size(self, cur_nimg: int) -> int:
        return self.cfg.batch

    def begin_minibatch(self, mb: Minibatch) -> list[str]:
        lines, self._notes = self._notes, []
        if self.stem is not None and not self.stem_ready:
            raise UserInputError(
                f"--path-stem {self.xl.path_stem} was not found; a new super-resolution run needs it (a resumed one "
                "does not: its training state holds the stem).")
        boundary = self._next_boundary()
        if boundary is not None and mb.cur_nimg >= boundary and self.stage + 1 < len(self.xl.stages):
            self._pending_start = boundary
            lines.append(self._advance())
            lines += self._notes
            self._notes = []
        self._nimg = self.stage_nimg(mb.cur_nimg)
        self._bufs_G = [b.detach().clone() for b in self.G.buffers() if b.is_floating_point()]
        return lines

    def _same_power_iteration(self, mb: Minibatch, loss: str) -> None:
        """Every chunk of a phase starts D's spectral-norm vectors (``weight_u``/``weight_v``) where the phase
        started them, so that they advance once per D call and phase however the minibatch is split over rounds
        and processes (as in the official setup of one chunk per GPU; with several rounds per process the
        official loop would advance them once per round)."""
        key = (mb.index, loss)
        if self._sn_key != key:
            self._sn_key = key
            self._sn_start = [(b, b.detach().clone()) for n, b in self.D.named_buffers()
                              if n.endswith(("weight_u", "weight_v"))]
            return
        with torch.no_grad():
            for b, start in self._sn_start:
                b.copy_(start)

    def accumulate(self, loss: str, chunk: Chunk, mb: Minibatch, gain: int) -> dict[str, torch.Tensor]:
        if loss in ("Gmain", "Dmain"):
            self._same_power_iteration(mb, loss)
        nimg = self.stage_nimg(mb.cur_nimg)
        sigma = self.pl_loss.blur_sigma(nimg)
        chunks = mb.batch // mb.batch_gpu
        n = chunk.gen_z.shape[0]
        count = torch.full([], float(n), device=chunk.gen_z.device)
        # official: a chunk's loss, averaged over chunks; mean: the mean over the minibatch's samples
        scale = 1.0 / chunks if self.xl.hinge_reduction == "official" else 1.0 / mb.batch
        if loss == "Gmain":
            self._freeze_stem()
            img = self._run_G(chunk.gen_z, chunk.gen_c)
            logits = self._run_D(img, chunk.gen_c, sigma)
            hinge = hinge_per_sample(-logits, self._groups, self.xl.hinge_reduction).sum()
            total = hinge * scale
            stats = {"loss/G": hinge.detach(), "count/G": count}
            if self.classifier is not None:
                ce = F.cross_entropy(self.classifier(img), chunk.gen_c.argmax(dim=1))
                total = total + self.xl.cls_weight * ce / chunks
                stats.update({"loss/guidance": ce.detach() * n, "count/guidance": count})
            total.backward()
            return stats
        if loss == "Greg":
            if nimg < self.xl.pl_start_kimg * 1000:
                return {}
            denom = phase_denominator("Greg", mb.batch, self.cfg.loss, mb.batch_gpu)
            # official: no lazy gain on the path-length term
            return self.pl_loss.accumulate("Greg", chunk.real_img, chunk.real_c, chunk.gen_z, chunk.gen_c,
                                           gain=1, denom=denom, cur_nimg=nimg)
        if loss == "Dmain":
            with torch.no_grad():
                fake = self._run_G(chunk.gen_z, chunk.gen_c, update_emas=True)
            fake_logits = self._run_D(fake, chunk.gen_c, sigma)
            loss_fake = hinge_per_sample(F.relu(1 + fake_logits), self._groups, self.xl.hinge_reduction).sum()
            real = resize_reals(chunk.real_img, self.stage_size)
            real_logits = self._run_D(real, chunk.real_c, sigma)
            loss_real = hinge_per_sample(F.relu(1 - real_logits), self._groups, self.xl.hinge_reduction).sum()
            # one backward for both terms (the official code runs two): the gradient of a chunk is then added
            # to the others' in the same order on one process as in the all-reduce over processes
            ((loss_fake + loss_real) * scale).backward()
            logit_count = torch.full([], float(real_logits.numel()), device=real.device)
            return {"loss/D": (loss_fake + loss_real).detach(), "count/D": count,
                    "scores/real": real_logits.detach().sum(), "scores/fake": fake_logits.detach().sum(),
                    "count/scores/real": logit_count, "count/scores/fake": logit_count}
        raise ValueError(f"unknown phase {loss!r}")

    def _run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        ws = self.G.mapping(z, c, update_emas=update_emas)
        return self.G.synthesis(ws, update_emas=False)  # official: the magnitude EMAs never move

    def _run_D(self, img: torch.Tensor, c: torch.Tensor, sigma: float) -> torch.Tensor:
        if sigma > 0:
            img = gaussian_blur(img, sigma)
        return self.D(img, c)

    def finish_phase(self, phase: Phase, dist_ctx: DistContext) -> None:
        pass

    def end_minibatch(self, mb: Minibatch, dist_ctx: DistContext) -> None:
        # w_avg moved on every process from its own chunks; D's buffers need no merge (spectral-norm vectors
        # are equal on every process, BatchNorm's running statistics are never used in training)
        dist_ctx.merge_buffers(self.G, self._bufs_G)
        beta = ema_beta(mb.batch, self.stage_nimg(mb.cur_nimg), self.cfg.ema_kimg, self.cfg.ema_rampup)
        update_ema(self.G_ema, self.G, beta)
        if self.xl.advance_on_plateau and self.stage + 1 < len(self.xl.stages):
            # one verdict for every process (whichever processes saw the metric's result)
            flag = torch.tensor([float(self.plateau.get("verdict", 0))], device=self.dev)
            if float(dist_ctx.all_reduce(flag)[0]) > 0 and not self.plateau["pending"]:
                self.plateau["pending"] = mb.cur_nimg + mb.batch
            self.plateau["verdict"] = 0

    def observe_metric(self, name: str, result: dict[str, float]) -> None:
        """A metric computed at a snapshot: counts the evaluations without improvement (lower is better)."""
        if not self.xl.advance_on_plateau or name != self.xl.plateau_metric or self.plateau["pending"]:
            return
        value = float(next(iter(result.values())))
        best = self.plateau["best"]
        if best is None or value < best:
            self.plateau.update(best=value, bad=0)
        else:
            self.plateau["bad"] += 1
        if self.plateau["bad"] >= self.xl.plateau_patience:
            self.plateau["verdict"] = 1

    def milestone(self, before: int, after: int) -> str | None:
        """``stage<k>-<res>px`` when the current stage ends within this minibatch (snapshot and grid)."""
        if self.stage + 1 >= len(self.xl.stages):
            return None
        boundary = self._next_boundary()
        if boundary is not None and before < boundary <= after:
            return f"stage{self.stage}-{self.resolution}px"
        return None

    def tick_values(self) -> dict[str, float]:
        return {"stage": float(self.stage), "resolution": float(self.resolution),
                "blur_sigma": float(self.pl_loss.blur_sigma(self._nimg)), "pl_mean": float(self.pl_loss.pl_mean)}

    def prepare_fresh_run(self, run_dir: Path, dist_ctx: DistContext) -> list[str]:
        """A new run (not a resume), before the networks are broadcast: the stem, the class embeddings."""
        lines = []
        if self.stem is not None:
            if not self.stem_ready:
                raise UserInputError(f"--path-stem {self.xl.path_stem} was not found; a new super-resolution run "
                                     "needs it.")
            lines.append(f"stage 0: {self.resolution} px grown from {self.xl.path_stem} "
                         f"({self.stem.img_resolution} px)")
        elif self.ds.label_dim > 0 and self.xl.class_embedding in ("lite0", "lite0-centered"):
            if dist_ctx.is_main:
                means, counts = class_mean_features(self.ds, self.dev, self.xl.embedding_resolution)
                if self.xl.class_embedding == "lite0-centered":
                    means = centered_class_means(means, counts)
                buf = io.BytesIO()
                np.save(buf, means)
                atomic_write_bytes(Path(run_dir) / CLASS_EMBEDDINGS_FILE, buf.getvalue())
                self.set_class_embeddings(torch.from_numpy(means))
                empty = [k for k, c in enumerate(counts) if c == 0]
                what = "centred per-class mean" if self.xl.class_embedding == "lite0-centered" else "per-class mean"
                lines.append(f"class embeddings: {what} EfficientNet-lite0 features of {sum(counts)} images "
                             f"-> {CLASS_EMBEDDINGS_FILE}" + (f" (classes without images: {empty})" if empty else ""))
        return lines

    def set_class_embeddings(self, table: torch.Tensor) -> None:
        """Start the class embedding rows ``[c_dim, embed_dim]`` of G (and G_ema) from ``table``."""
        embed = self.G.mapping.embed
        if table.shape[1] != embed.weight.shape[1]:
            raise UserInputError(f"The class embedding table is {embed.weight.shape[1]} wide but the features are "
                                 f"{table.shape[1]}; use embed_dim {table.shape[1]}.")
        with torch.no_grad():
            embed.weight[: table.shape[0]].copy_(table.to(embed.weight))
        self.G_ema.load_state_dict(self.G.state_dict())
        self.class_embeddings = table.detach().float().cpu()

    def state_dict(self) -> dict[str, Any]:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "pl_mean": self.pl_loss.pl_mean.detach().cpu(),
                "xl_stage": self.stage, "xl_stage_starts": list(self.stage_starts),
                "xl_stem": self.stem.state_dict() if self.stem is not None else None,
                "xl_stem_network": self.stem.describe() if self.stem is not None else None,
                "xl_plateau": {k: v for k, v in self.plateau.items() if v is not None},
                "xl_class_embeddings": self.class_embeddings}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        starts = [int(s) for s in state["xl_stage_starts"]]
        for k in range(len(starts) - 1):  # stages that have ended keep the length they had
            planned = self.xl.stage_kimg(k)
            if (planned is not None and not self.xl.advance_on_plateau
                    and int(round(planned * 1000)) != starts[k + 1] - starts[k]):
                raise UserInputError(
                    f"--kimg-per-stage gives stage {k} {planned:g} kimg, but that stage ended after "
                    f"{(starts[k + 1] - starts[k]) / 1000:g} kimg (the run is in stage {len(starts) - 1}). On resume "
                    "it can change only the stages that have not ended; give those the new length and keep the "
                    "others'.")
        if state.get("xl_stem") is not None:
            self.stem = network_from_description(state["xl_stem_network"]).to(self.dev).eval()
            self.stem.load_state_dict(state["xl_stem"])
            self.stem_ready = True
        if starts != self.stage_starts or state.get("xl_stem") is not None:
            self.stage_starts = starts
            self._build_stage(self.stage)
        for name in ("G", "D", "G_ema"):
            getattr(self, name).load_state_dict(state[name])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.pl_loss.pl_mean.copy_(state["pl_mean"].to(self.pl_loss.pl_mean.device))
        self.plateau = {"best": None, "bad": 0, "pending": 0, **state.get("xl_plateau", {})}
        self.class_embeddings = state.get("xl_class_embeddings")

    def load_weights(self, path: str) -> None:
        copy_networks_from(path, {"G": self.G, "D": self.D, "G_ema": self.G_ema})

    def render(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.G_ema(z, c, noise_mode="const")

    def metric_generator(self) -> nn.Module:
        return _StageOutput(self.G_ema, self.ds.resolution)

    def snapshot_extra(self) -> dict[str, Any]:
        return {"family": "stylegan-xl", "stage": self.stage, "stage_resolution": self.resolution,
                "stage_start_nimg": self.stage_starts[-1]}


"""Per-resolution contributions of a skip generator (Karras et al., "Analyzing and Improving the Image Quality of
StyleGAN", 2020, sec. 4.1 and fig. 8).

In the ``skip`` architecture the image is a sum over resolutions: block ``b{r}`` adds its tRGB output to the
upsampled image so far, so the final image is

    img = sum_r U^(log2(R / r)) tRGB_r,

with ``U`` the 2x upsampling of the network (filter ``[1, 3, 3, 1]``). :func:`compute_contributions` records
each ``tRGB_r``, upsamples it to the output resolution with the network's own filters (so the terms add up to the
image exactly) and accumulates over ``num_samples`` random latents, per level:

- ``std_share``: ``std_r / sum std`` with ``std_r`` the standard deviation of the level's pixel values (over
  samples, pixels, per channel, averaged over channels): the paper's fig. 8 breakdown.
- ``variance_share``: ``var_r / sum var``.
- ``energy_share``: ``E[c_r^2] / sum E[c^2]`` (mean square, so a constant colour offset counts too).
- ``covariance_share``: ``Cov(c_r, img) / Var(img)``: these add up to exactly 1, so they split the output's
  variance among the levels including their interactions; a level that cancels others is negative.

The paper finds that, in a 1024 px config-E network, the 512 px level dominates (the network does not use its
highest resolution), which motivated config F's larger networks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from styleforge.analysis._common import rgb_image
from styleforge.analysis._plot import bar_plot, image_row_figure
from styleforge.ops.upfirdn2d import upsample2d
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import save_png
from styleforge.utils.io import atomic_write_json

__all__ = ["ContributionOptions", "ContributionResult", "trgb_blocks", "level_images", "compute_contributions",
           "run_contributions"]

SHARES = ("std_share", "variance_share", "energy_share", "covariance_share")


@dataclass(frozen=True)
class ContributionOptions:
    """Settings of :func:`compute_contributions`.

    Attributes:
        num_samples: random latents accumulated.
        batch_size: images per forward pass.
        seed: seed of the latents and labels.
        truncation_psi: truncation of the latents.
        noise_mode: generator noise mode.
    """

    num_samples: int = 1000
    batch_size: int = 16
    seed: int = 0
    truncation_psi: float = 1.0
    noise_mode: str = "const"

    def __post_init__(self) -> None:
        if self.num_samples < 2:
            raise UserInputError(f"num_samples must be at least 2 (variances need two), got {self.num_samples}.")
        if self.batch_size < 1:
            raise UserInputError(f"batch_size must be at least 1, got {self.batch_size}.")


@dataclass
class ContributionResult:
    """Per-level statistics: ``resolutions[i]`` has ``shares[name][i]`` for every name in :data:`SHARES`."""

    resolutions: list[int]
    shares: dict[str, list[float]]
    std: list[float]
    output_std: float
    num_samples: int
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "resolutions": self.resolutions,
            **self.shares,
            "std": self.std,
            "output_std": self.output_std,
            "num_samples": self.num_samples,
        }


def trgb_blocks(G: torch.nn.Module) -> list[torch.nn.Module]:
    """The synthesis blocks of a skip generator that own a tRGB layer, from 4x4 up; an error for other networks."""
    synthesis = getattr(G, "synthesis", None)
    blocks = synthesis.blocks() if hasattr(synthesis, "blocks") else None
    if not blocks or any(getattr(b, "architecture", None) != "skip" or not hasattr(b, "torgb") for b in blocks):
        arch = getattr(blocks[0], "architecture", None) if blocks else None
        raise UserInputError(
            f"Per-resolution contributions need a StyleGAN2 generator with the 'skip' architecture (a tRGB layer "
            f"at every resolution); this is a {type(G).__name__}"
            + (f" with architecture {arch!r}" if arch else "")
            + ". StyleGAN3, PGGAN and the 'orig'/'resnet' StyleGAN2 generators output RGB only at the end."
        )
    return blocks


def level_images(
    G: torch.nn.Module, ws: torch.Tensor, noise_mode: str = "const"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Generate ``img`` from ``ws`` and split it into per-level terms: ``(img, [c_4, c_8, ..., c_R])``.

    Each ``c_r`` ``[N, C, R, R]`` is block ``b{r}``'s tRGB output upsampled to the output resolution by the
    following blocks' filters, so ``sum_r c_r == img`` up to float rounding.
    """
    blocks = trgb_blocks(G)
    captured: list[torch.Tensor] = []
    hooks = [b.torgb.register_forward_hook(lambda m, a, out: captured.append(out.to(torch.float32)))
             for b in blocks]
    try:
        img = G.synthesis(ws, noise_mode=noise_mode)
    finally:
        for h in hooks:
            h.remove()
    terms = []
    for i, y in enumerate(captured):
        for later in blocks[i + 1 :]:
            y = upsample2d(y, later.resample_filter, impl=later.ops_impl)
        terms.append(y)
    return img, terms


class _Moments:
    """Streaming sums per channel in float64: ``sum x``, ``sum x^2``, ``sum x * y``."""

    def __init__(self) -> None:
        self.s = self.s2 = self.sxy = None
        self.count = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(torch.float64), y.to(torch.float64)
        dims = (0, 2, 3)
        s, s2, sxy = x.sum(dims), x.square().sum(dims), (x * y).sum(dims)
        if self.s is None:
            self.s, self.s2, self.sxy = s, s2, sxy
        else:
            self.s, self.s2, self.sxy = self.s + s, self.s2 + s2, self.sxy + sxy
        self.count += x.shape[0] * x.shape[2] * x.shape[3]

    def mean(self) -> torch.Tensor:
        return self.s / self.count

    def var(self) -> torch.Tensor:
        return (self.s2 / self.count - self.mean().square()).clamp_min(0)

    def cov(self, other: _Moments) -> torch.Tensor:
        return self.sxy / self.count - self.mean() * other.mean()


def compute_contributions(
    G: torch.nn.Module, options: ContributionOptions | None = None, device: torch.device | str = "cpu"
) -> ContributionResult:
    """Share of each tRGB level in the output of a skip generator over random samples (see the module docstring)."""
    from styleforge.metrics.equivariance import _random_labels

    options = options or ContributionOptions()
    blocks = trgb_blocks(G)
    gen = torch.Generator().manual_seed(options.seed)
    levels = [_Moments() for _ in blocks]
    output = _Moments()
    done = 0
    with torch.no_grad():
        while done < options.num_samples:
            n = min(options.batch_size, options.num_samples - done)
            z = torch.randn([n, G.z_dim], generator=gen).to(device)
            ws = G.mapping(z, _random_labels(G.c_dim, n, gen, device), truncation_psi=options.truncation_psi)
            img, terms = level_images(G, ws, options.noise_mode)
            output.add(img, img)
            for acc, term in zip(levels, terms, strict=True):
                acc.add(term, img)
            done += n
    var = torch.stack([acc.var().mean() for acc in levels])
    std = torch.stack([acc.var().sqrt().mean() for acc in levels])
    energy = torch.stack([(acc.s2 / acc.count).mean() for acc in levels])
    cov = torch.stack([acc.cov(output).sum() for acc in levels]) / output.var().sum()
    shares = {
        "std_share": (std / std.sum()).tolist(),
        "variance_share": (var / var.sum()).tolist(),
        "energy_share": (energy / energy.sum()).tolist(),
        "covariance_share": cov.tolist(),
    }
    return ContributionResult(
        resolutions=[int(b.resolution) for b in blocks],
        shares=shares,
        std=std.tolist(),
        output_std=float(output.var().sqrt().mean()),
        num_samples=done,
    )



def run_contributions(
    G: torch.nn.Module,
    out_dir: str | Path,
    options: ContributionOptions | None = None,
    device: torch.device | str = "cpu",
) -> ContributionResult:
    """:func:`compute_contributions`, then write ``contributions.png`` (bar plot), ``contributions_sample.png``
    (one image and its per-level terms, each on the image's [-1, 1] scale) and ``contributions.json``."""
    options = options or ContributionOptions()
    result = compute_contributions(G, options, device)
    out = Path(out_dir)
    labels = [f"{r}px" for r in result.resolutions]
    plot = bar_plot(
        labels,
        {"std share (paper fig. 8)": result.shares["std_share"],
         "covariance share (sums to 1)": result.shares["covariance_share"]},
        f"tRGB contributions, {result.num_samples} samples",
        "tRGB level",
        "share of the output",
    )
    result.files["plot"] = out / "contributions.png"
    save_png(result.files["plot"], plot)
    with torch.no_grad():
        z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(options.seed)).to(device)
        c = torch.zeros([1, G.c_dim], device=device)
        if G.c_dim:
            c[0, 0] = 1
        img, terms = level_images(G, G.mapping(z, c, truncation_psi=options.truncation_psi), options.noise_mode)
    sample = image_row_figure(
        [rgb_image(img[0].cpu())] + [rgb_image(t[0].cpu()) for t in terms],
        ["image"] + [f"{lab} term" for lab in labels],
        panel_size=128,
        footer="each term upsampled to the output resolution and shown on the image's scale (grey = 0)",
    )
    result.files["sample"] = out / "contributions_sample.png"
    save_png(result.files["sample"], sample)
    result.files["summary"] = out / "contributions.json"
    atomic_write_json(
        result.files["summary"],
        {**result.summary(), "options": asdict(options), "files": {k: p.name for k, p in result.files.items()}},
    )
    return result

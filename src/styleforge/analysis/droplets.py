"""Droplet detector: localised spikes in the synthesis feature maps (Karras et al., "Analyzing and Improving the
Image Quality of StyleGAN", 2020, sec. 2 and fig. 1).

StyleGAN's AdaIN normalises each feature map by its own mean and variance, and the generator learned to sneak
signal-strength information past it by creating one strong, localised spike that dominates the statistics: the
"water droplet" artifact, visible in the feature maps from 64x64 on even when hard to see in the image.
StyleGAN2's weight demodulation removes the cause, so its networks should show none.

For every synthesis layer (StyleGAN2: the modulated convolutions ``b{r}.conv0/conv1``; StyleGAN3 and XL: the
layers ``L{i}_{size}_{channels}`` before ToRGB) and every sample, the per-pixel activation magnitude

    m(p) = sqrt(mean_c x_c(p)^2)

is computed (the feature vector's root mean square over channels, so that a spike shared by many channels counts
and a single sparse channel does not), and its **peak ratio** ``max_p m / median_p m``. A droplet is a peak ratio
far above what the layer's texture produces; per layer the report gives the median and the largest peak ratio
over samples and the share of samples whose ratio exceeds ``threshold``. The worst (layer, sample) is drawn next
to its image. Layers smaller than ``min_size`` pixels per side are skipped (a median over 16 pixels says little).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from styleforge.analysis._common import rgb_image
from styleforge.analysis._plot import apply_colormap, bar_plot, image_row_figure
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import save_png
from styleforge.utils.io import atomic_write_json

__all__ = ["DropletOptions", "DropletLayer", "DropletResult", "synthesis_layers", "peak_ratios",
           "detect_droplets", "run_droplets"]

#: default peak ratio above which a sample counts as having a droplet in that layer
DEFAULT_THRESHOLD = 10.0
#: keeps the ratio finite where the median magnitude is zero
_EPS = 1e-8


@dataclass(frozen=True)
class DropletOptions:
    """Settings of :func:`detect_droplets`.

    Attributes:
        num_samples: random latents examined.
        batch_size: images per forward pass.
        threshold: peak ratio (max / median magnitude) that counts as a droplet.
        min_size: skip layers whose feature maps are smaller than this per side.
        seed: seed of the latents and labels.
        truncation_psi: truncation of the latents.
        noise_mode: generator noise mode.
    """

    num_samples: int = 200
    batch_size: int = 16
    threshold: float = DEFAULT_THRESHOLD
    min_size: int = 8
    seed: int = 0
    truncation_psi: float = 1.0
    noise_mode: str = "const"

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.batch_size < 1:
            raise UserInputError(
                f"num_samples and batch_size must be at least 1, got {self.num_samples} and {self.batch_size}."
            )
        if not self.threshold > 1:
            raise UserInputError(f"threshold is a ratio max/median and must be > 1, got {self.threshold}.")


@dataclass(frozen=True)
class DropletLayer:
    """Statistics of one layer: peak ratios over samples, the share above the threshold, the worst sample."""

    name: str
    size: int
    channels: int
    median_ratio: float
    max_ratio: float
    share_above: float
    worst_sample: int


@dataclass
class DropletResult:
    """Outcome of :func:`detect_droplets`; ``worst`` holds the worst layer's map and image (for the figure)."""

    layers: list[DropletLayer]
    threshold: float
    num_samples: int
    worst: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def has_droplets(self) -> bool:
        return any(layer.share_above > 0 for layer in self.layers)

    def summary(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "num_samples": self.num_samples,
            "has_droplets": self.has_droplets,
            "layers": [asdict(layer) for layer in self.layers],
            "worst": {k: v for k, v in self.worst.items() if not isinstance(v, np.ndarray)},
        }


def synthesis_layers(G: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(name, module)`` of the feature-producing synthesis layers of a StyleGAN2, StyleGAN3 or StyleGAN-XL ``G``."""
    from styleforge.layers.stylegan2_blocks import SynthesisLayer as SG2Layer
    from styleforge.models.stylegan3 import SynthesisLayer as SG3Layer

    synthesis = getattr(G, "synthesis", None)
    if synthesis is None:
        raise UserInputError(f"{type(G).__name__} has no synthesis network; droplets need a StyleGAN generator.")
    found: list[tuple[str, torch.nn.Module]] = []
    if hasattr(synthesis, "official_layer_name") and hasattr(synthesis, "layers"):
        for i, layer in enumerate(synthesis.layers):
            if isinstance(layer, SG3Layer) and not layer.is_torgb:
                found.append((synthesis.official_layer_name(i), layer))
    else:
        found = [(name, m) for name, m in synthesis.named_modules() if isinstance(m, SG2Layer)]
    if not found:
        raise UserInputError(
            f"No StyleGAN2/StyleGAN3 synthesis layers found in {type(G).__name__}; the droplet detector supports "
            "StyleGAN2, StyleGAN3 and StyleGAN-XL generators."
        )
    return found


def peak_ratios(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample peak ratio ``max m / median m`` of ``features`` ``[N, C, H, W]`` and the magnitude maps ``m``.

    Returns:
        ``(ratios [N], maps [N, H, W])`` in float32, ``m = sqrt(mean_c x_c^2)``.
    """
    m = features.to(torch.float32).square().mean(1).sqrt()
    flat = m.flatten(1)
    ratios = flat.max(1).values / (flat.median(1).values + _EPS)
    return ratios, m


def detect_droplets(
    G: torch.nn.Module, options: DropletOptions | None = None, device: torch.device | str = "cpu"
) -> DropletResult:
    """Peak ratios of every synthesis layer over ``options.num_samples`` random latents (see the module docstring)."""
    from styleforge.metrics.equivariance import _random_labels

    options = options or DropletOptions()
    layers = synthesis_layers(G)
    ratios: dict[str, list[torch.Tensor]] = {n: [] for n, _ in layers}
    shapes: dict[str, tuple[int, int]] = {}
    worst: dict[str, Any] = {"ratio": -1.0}
    batch_maps: dict[str, torch.Tensor] = {}
    batch_feats: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def fn(module, args, out):
            r, m = peak_ratios(out)
            ratios[name].append(r.cpu())
            shapes[name] = (int(out.shape[1]), int(out.shape[-1]))
            i = int(r.argmax())  # keep only this batch's worst sample: full feature batches can be large
            batch_maps[name], batch_feats[name] = m[i].cpu(), out[i].detach().to(torch.float32).cpu()
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers]
    gen = torch.Generator().manual_seed(options.seed)
    done = 0
    try:
        with torch.no_grad():
            while done < options.num_samples:
                n = min(options.batch_size, options.num_samples - done)
                z = torch.randn([n, G.z_dim], generator=gen).to(device)
                ws = G.mapping(z, _random_labels(G.c_dim, n, gen, device), truncation_psi=options.truncation_psi)
                img = G.synthesis(ws, noise_mode=options.noise_mode)
                for name, _ in layers:
                    if shapes[name][1] < options.min_size:
                        continue
                    r = ratios[name][-1]
                    i = int(r.argmax())
                    if float(r[i]) > worst["ratio"]:
                        feats, m = batch_feats[name], batch_maps[name]
                        peak = np.unravel_index(int(m.argmax()), m.shape)
                        channel = int(feats[:, peak[0], peak[1]].abs().argmax())
                        worst = {"ratio": float(r[i]), "layer": name, "sample": done + i,
                                 "peak": [int(peak[0]), int(peak[1])], "channel": channel,
                                 "map": m.numpy(), "channel_map": feats[channel].numpy(),
                                 "image": img[i].cpu().numpy()}
                done += n
    finally:
        for h in handles:
            h.remove()
    stats = []
    for name, _ in layers:
        channels, size = shapes[name]
        if size < options.min_size:
            continue
        r = torch.cat(ratios[name])
        stats.append(DropletLayer(
            name=name, size=size, channels=channels, median_ratio=float(r.median()), max_ratio=float(r.max()),
            share_above=float((r > options.threshold).to(torch.float64).mean()), worst_sample=int(r.argmax()),
        ))
    if not stats:
        raise UserInputError(f"Every synthesis layer is smaller than min_size={options.min_size}; lower min_size.")
    return DropletResult(layers=stats, threshold=options.threshold, num_samples=done, worst=worst)


def run_droplets(
    G: torch.nn.Module, out_dir: str | Path, options: DropletOptions | None = None, device: torch.device | str = "cpu"
) -> DropletResult:
    """:func:`detect_droplets`, then write ``droplets.png`` (largest and median peak ratio per layer, against the
    threshold), ``droplets_worst.png`` (the worst sample's image, its magnitude map and the strongest channel at
    the peak) and ``droplets.json``."""
    options = options or DropletOptions()
    result = detect_droplets(G, options, device)
    out = Path(out_dir)
    names = [layer.name for layer in result.layers]
    plot = bar_plot(
        names,
        {"largest peak ratio": [layer.max_ratio for layer in result.layers],
         "median peak ratio": [layer.median_ratio for layer in result.layers]},
        f"max/median activation magnitude, {result.num_samples} samples (droplet if > {options.threshold:g})",
        "synthesis layer",
        "peak ratio",
        size=(max(480, 70 * len(names)), 340),
    )
    result.files["plot"] = out / "droplets.png"
    save_png(result.files["plot"], plot)

    w = result.worst
    image = rgb_image(w["image"])
    m = w["map"]
    ch = w["channel_map"]
    lim = float(np.abs(ch).max()) or 1.0
    panels = [image, apply_colormap(m, 0.0, float(m.max()) or 1.0), apply_colormap(np.abs(ch), 0.0, lim)]
    titles = [f"sample {w['sample']}", f"{w['layer']} magnitude", f"channel {w['channel']} |x|"]
    footer = (f"worst peak ratio {w['ratio']:.2f} (max/median of the channel RMS) at row {w['peak'][0]}, "
              f"column {w['peak'][1]}\n{'droplets found' if result.has_droplets else 'no droplets'}: "
              f"{sum(layer.share_above > 0 for layer in result.layers)} of {len(result.layers)} layers "
              f"have samples above {options.threshold:g}; colour: black = 0, yellow = the map's maximum")
    result.files["worst"] = out / "droplets_worst.png"
    save_png(result.files["worst"], image_row_figure(panels, titles, panel_size=192, footer=footer))
    result.files["summary"] = out / "droplets.json"
    atomic_write_json(
        result.files["summary"],
        {**result.summary(), "options": asdict(options), "files": {k: p.name for k, p in result.files.items()}},
    )
    return result

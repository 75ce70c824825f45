"""Attribution by projection (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020,
sec. 5): images a generator made can be projected back into its latent space almost exactly, real images cannot,
so the reconstruction distance after projection tells the two apart. :func:`distance_histogram` draws the two
distributions as the paper's figure 10 does (step outlines of the histograms, generated vs real)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["distance_histogram", "HISTOGRAM_BINS"]

HISTOGRAM_BINS = 20


def distance_histogram(
    groups: Sequence[tuple[str, Sequence[float]]], title: str, xlabel: str, bins: int = HISTOGRAM_BINS
) -> np.ndarray:
    """uint8 RGB plot ``[H, W, 3]`` of the histograms of each ``(label, distances)`` group over common bins,
    drawn as step outlines (fraction of the group's images per bin)."""
    from styleforge.analysis._plot import Curve, line_plot

    values = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in groups])
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    curves = []
    for label, v in groups:
        counts, _ = np.histogram(np.asarray(v, dtype=np.float64), bins=edges)
        frac = counts / max(len(v), 1)
        x = np.repeat(edges, 2)[1:-1]  # step outline: each bin is a flat segment
        y = np.repeat(frac, 2)
        x = np.concatenate([[edges[0]], x, [edges[-1]]])
        y = np.concatenate([[0.0], y, [0.0]])
        curves.append(Curve(x=x, y=y, label=f"{label} (n={len(v)})"))
    return line_plot(curves, title=title, xlabel=xlabel, ylabel="fraction of images", size=(480, 320))

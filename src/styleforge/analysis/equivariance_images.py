"""Pictures of what the equivariance metrics compare (Karras et al., "Alias-Free Generative Adversarial Networks",
2021, sec. 3 and app. E).

:class:`EquivarianceImageCollector` is passed as ``on_batch`` to
:func:`styleforge.metrics.equivariance.compute_equivariance`; it keeps the first samples of each metric, so the
images are exactly the pairs the printed numbers were computed from. :meth:`EquivarianceImageCollector.write`
draws, per metric and sample:

- the reference ``t[g(z)]``: the generated image transformed afterwards (shifted, or rotated by the
  band-limited resampler),
- the generated image of the transformed input ``g(t[z])`` (for EQ-R after the pseudo-rotation filter the metric
  applies),
- ``|difference|`` (channel mean) on a colour scale shared by the metric's samples.

Pixels outside the valid region (uncovered border, filter support) are greyed out and the region's edge is
drawn in cyan; the metric ignores them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from styleforge.analysis._common import rgb_image
from styleforge.analysis._plot import apply_colormap, image_row_figure
from styleforge.metrics.equivariance import psnr_db
from styleforge.utils.images import save_png
from styleforge.utils.io import atomic_write_json

__all__ = ["EquivarianceImageCollector", "mark_invalid"]

#: labels of the metrics and of the two images each compares
_LABELS = {
    "eqt_int": ("EQ-T", "t = integer-pixel shift of the output; g(t[z]) = shifted input"),
    "eqt_frac": ("EQ-T_frac", "t = Lanczos-3 sub-pixel shift of the output; g(t[z]) = shifted input"),
    "eqr": ("EQ-R", "t = band-limited rotation of the output; g(t[z]) = rotated input, then the pseudo-rotation "
            "filter"),
}
#: images are enlarged (nearest neighbour) to at least this many pixels wide
_MIN_PANEL = 160
_EDGE_COLOR = np.array([0, 255, 255], dtype=np.uint8)
_INVALID_GREY = 160
_INVALID_BLEND = 0.7  # how far invalid pixels are pulled towards grey


def mark_invalid(rgb: np.ndarray, valid: np.ndarray, scale: int) -> np.ndarray:
    """Enlarge ``rgb`` ``[H, W, 3]`` by ``scale``, grey out pixels where ``valid`` ``[H, W]`` is False, and draw the
    valid region's edge (valid pixels next to an invalid one, at the enlarged size) in cyan."""
    big = rgb.repeat(scale, axis=0).repeat(scale, axis=1).astype(np.float64)
    ok = valid.repeat(scale, axis=0).repeat(scale, axis=1)
    big[~ok] = big[~ok] * (1 - _INVALID_BLEND) + _INVALID_GREY * _INVALID_BLEND
    padded = np.pad(ok, 1, mode="constant", constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    out = np.rint(big).astype(np.uint8)
    out[ok & ~interior] = _EDGE_COLOR
    return out


class EquivarianceImageCollector:
    """Keeps the first ``num_images`` compared pairs of each metric (an ``on_batch`` callback)."""

    def __init__(self, num_images: int = 4) -> None:
        self.num_images = int(num_images)
        self.kept: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    def __call__(self, name: str, ref: torch.Tensor, img: torch.Tensor, mask: torch.Tensor) -> None:
        kept = self.kept.setdefault(name, [])
        for i in range(min(ref.shape[0], self.num_images - len(kept))):
            kept.append((ref[i].detach().cpu().float().numpy(), img[i].detach().cpu().float().numpy(),
                         mask[i].detach().cpu().float().numpy()))

    def write(self, out_dir: str | Path, results: dict[str, float] | None = None) -> dict[str, Path]:
        """One PNG per metric, ``equivariance_<name>.png`` (rows = samples), and ``equivariance.json`` with
        ``results`` (dB). Returns the written paths by metric name (plus ``"summary"``)."""
        out = Path(out_dir)
        results = results or {}
        files: dict[str, Path] = {}
        for name, samples in self.kept.items():
            label, how = _LABELS.get(name, (name, ""))
            diffs = [np.abs(r - g).mean(0) * (m.min(0) > 0) for r, g, m in samples]
            vmax = max(float(d.max()) for d in diffs) or 1e-6
            res = samples[0][0].shape[-1]
            scale = max(1, math.ceil(_MIN_PANEL / res))
            rows = []
            for k, ((ref, img, mask), diff) in enumerate(zip(samples, diffs, strict=True)):
                valid = mask.min(0) > 0
                panels = [
                    mark_invalid(rgb_image(ref), valid, scale),
                    mark_invalid(rgb_image(img), valid, scale),
                    mark_invalid(apply_colormap(diff, 0.0, vmax), valid, scale),
                ]
                titles = [f"{k}: t[g(z)]", "g(t[z])", "|difference|"]
                psnr = psnr_db(float(((ref - img) ** 2 * mask).sum()), max(float(mask.sum()), 1.0))
                footer = f"sample {k}: PSNR {psnr:.2f} dB on its valid pixels"
                rows.append(image_row_figure(panels, titles, panel_size=res * scale, footer=footer))
            value = results.get(name)
            summary = (
                f"{label} = {value:.2f} dB over all samples" if value is not None else label
            ) + f"\n{how}\n|difference|: black = 0, yellow = {vmax:.3g} (images span [-1, 1]); grey = not compared"
            rows.append(image_row_figure([np.full((1, 1, 3), 255, np.uint8)], [""], panel_size=1, footer=summary))
            width = max(r.shape[1] for r in rows)
            rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
            files[name] = out / f"equivariance_{name}.png"
            save_png(files[name], np.concatenate(rows, axis=0))
        files["summary"] = out / "equivariance.json"
        atomic_write_json(files["summary"], {"results_db": results, "num_images": self.num_images,
                                             "files": {k: p.name for k, p in files.items()}})
        return files

"""Tiny plotting helpers written with PIL only (matplotlib is not a dependency).

- :func:`apply_colormap` maps a 2-D array to RGB with a hand-written perceptual colour map ("inferno"-like:
  black -> purple -> orange -> pale yellow), piecewise-linear between a few anchor colours.
- :func:`heatmap_panel_figure` lays several heatmaps side by side with titles and a labelled colour bar.
- :func:`line_plot` draws a few curves on labelled axes.
- :func:`bar_plot` draws grouped bars (one group per category, one bar per series) with a legend.
- :func:`image_row_figure` lays RGB images side by side with a title above each and an optional footer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["apply_colormap", "heatmap_panel_figure", "line_plot", "bar_plot", "image_row_figure", "Curve"]

# Anchor colours of the colour map, evenly spaced on [0, 1] (dark = low, bright = high).
_COLORMAP_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float64,
)

_BACKGROUND = (255, 255, 255)
_FOREGROUND = (0, 0, 0)
_GRID = (220, 220, 220)
_FONT_SIZE = 12
_MARGIN = 8  # pixels around figure elements
_COLORBAR_WIDTH = 18
_NUM_COLORBAR_TICKS = 5

# Distinct line colours for curves (blue, orange, green, red, purple).
LINE_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def _font(size: int = _FONT_SIZE) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return int(x1 - x0), int(y1 - y0)


def apply_colormap(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Map a 2-D array to a uint8 RGB image ``[H, W, 3]``; ``vmin`` -> darkest, ``vmax`` -> brightest colour.

    Values outside ``[vmin, vmax]`` are clipped. Non-finite values are drawn at ``vmin``.
    """
    if vmax <= vmin:
        raise ValueError(f"vmax ({vmax}) must be larger than vmin ({vmin})")
    t = (np.nan_to_num(values.astype(np.float64), nan=vmin, neginf=vmin, posinf=vmax) - vmin) / (vmax - vmin)
    t = np.clip(t, 0.0, 1.0) * (len(_COLORMAP_ANCHORS) - 1)
    lo = np.minimum(np.floor(t).astype(np.int64), len(_COLORMAP_ANCHORS) - 2)
    frac = (t - lo)[..., None]
    rgb = _COLORMAP_ANCHORS[lo] * (1 - frac) + _COLORMAP_ANCHORS[lo + 1] * frac
    return np.rint(rgb).astype(np.uint8)


def heatmap_panel_figure(
    panels: Sequence[np.ndarray],
    titles: Sequence[str],
    vmin: float,
    vmax: float,
    unit: str = "dB",
    panel_size: int = 256,
    footer: str = "",
) -> np.ndarray:
    """Heatmaps side by side, sharing one colour scale, with a colour bar labelled in ``unit``.

    Args:
        panels: 2-D arrays (any size; each is resized to ``panel_size`` square).
        titles: one title per panel, drawn above it.
        vmin, vmax: the colour scale shared by all panels.
        unit: label of the colour bar.
        panel_size: edge length of each panel in pixels.
        footer: an optional line of text under the panels.

    Returns:
        uint8 RGB image ``[H, W, 3]``.
    """
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = _text_size(probe, "Ag", font)[1]
    tick_values = _nice_ticks(vmin, vmax, _NUM_COLORBAR_TICKS)
    tick_labels = [f"{v:g}" for v in tick_values]
    tick_w = max(_text_size(probe, s, font)[0] for s in [*tick_labels, unit])
    n = len(panels)
    width = _MARGIN + n * (panel_size + _MARGIN) + _COLORBAR_WIDTH + 2 * _MARGIN + tick_w + _MARGIN
    top = _MARGIN + text_h + _MARGIN
    height = top + panel_size + _MARGIN + (text_h + _MARGIN if footer else 0)
    fig = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(fig)
    for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        x0 = _MARGIN + i * (panel_size + _MARGIN)
        rgb = Image.fromarray(apply_colormap(panel, vmin, vmax))
        # nearest keeps the bins visible when enlarging; box-averaging avoids aliasing when shrinking
        resample = Image.NEAREST if panel.shape[0] <= panel_size else Image.BOX
        rgb = rgb.resize((panel_size, panel_size), resample)
        fig.paste(rgb, (x0, top))
        tw = _text_size(draw, title, font)[0]
        draw.text((x0 + (panel_size - tw) // 2, _MARGIN), title, fill=_FOREGROUND, font=font)
    # Colour bar: top = vmax, bottom = vmin.
    cx = _MARGIN + n * (panel_size + _MARGIN) + _MARGIN
    ramp = np.linspace(vmax, vmin, panel_size)[:, None].repeat(_COLORBAR_WIDTH, axis=1)
    fig.paste(Image.fromarray(apply_colormap(ramp, vmin, vmax)), (cx, top))
    draw.rectangle([cx, top, cx + _COLORBAR_WIDTH - 1, top + panel_size - 1], outline=_FOREGROUND)
    draw.text((cx, _MARGIN), unit, fill=_FOREGROUND, font=font)
    for value, label in zip(tick_values, tick_labels, strict=True):
        y = top + round((vmax - value) / (vmax - vmin) * (panel_size - 1))
        draw.line([cx + _COLORBAR_WIDTH, y, cx + _COLORBAR_WIDTH + 3, y], fill=_FOREGROUND)
        ty = min(max(y - text_h // 2, top - text_h // 2), top + panel_size - text_h)
        draw.text((cx + _COLORBAR_WIDTH + 5, ty), label, fill=_FOREGROUND, font=font)
    if footer:
        draw.text((_MARGIN, top + panel_size + _MARGIN), footer, fill=_FOREGROUND, font=font)
    return np.asarray(fig)


@dataclass(frozen=True)
class Curve:
    """One line of a :func:`line_plot`: x and y values (same length) and a legend label."""

    x: np.ndarray
    y: np.ndarray
    label: str


def _nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    """Round tick positions covering ``[lo, hi]`` (steps of 1, 2 or 5 times a power of ten)."""
    span = max(hi - lo, 1e-12)
    raw = span / max(count - 1, 1)
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return np.arange(np.ceil(lo / step) * step, hi + 1e-9 * step, step)


def line_plot(
    curves: Sequence[Curve],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (420, 300),
) -> np.ndarray:
    """Curves on one pair of axes with ticks, grid, axis labels and a legend.

    Returns:
        uint8 RGB image ``[H, W, 3]`` of ``size`` (width, height).
    """
    font = _font()
    width, height = size
    fig = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(fig)
    text_h = _text_size(draw, "Ag", font)[1]
    finite = [c for c in curves if np.isfinite(c.y).any()]
    xs = np.concatenate([c.x for c in curves]) if curves else np.zeros(1)
    ys = np.concatenate([c.y[np.isfinite(c.y)] for c in finite]) if finite else np.zeros(1)
    x_lo, x_hi = float(xs.min()), float(xs.max())
    y_lo, y_hi = float(ys.min()), float(ys.max())
    if y_hi - y_lo < 1e-9:
        y_lo, y_hi = y_lo - 1, y_hi + 1
    if x_hi - x_lo < 1e-9:
        x_hi = x_lo + 1
    yticks = _nice_ticks(y_lo, y_hi)
    ylabels = [f"{v:g}" for v in yticks]
    left = _MARGIN + text_h + _MARGIN + max(_text_size(draw, s, font)[0] for s in ylabels) + 6
    right = width - _MARGIN
    top = _MARGIN + text_h + _MARGIN
    bottom = height - (_MARGIN + 2 * text_h + 2 * _MARGIN)

    def to_px(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        px = left + (x - x_lo) / (x_hi - x_lo) * (right - left)
        py = bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)
        return px, py

    for v, s in zip(yticks, ylabels, strict=True):
        _, py = to_px(np.array([x_lo]), np.array([v]))
        draw.line([left, py[0], right, py[0]], fill=_GRID)
        tw = _text_size(draw, s, font)[0]
        draw.text((left - 4 - tw, py[0] - text_h // 2 - 1), s, fill=_FOREGROUND, font=font)
    for v in _nice_ticks(x_lo, x_hi):
        px, _ = to_px(np.array([v]), np.array([y_lo]))
        draw.line([px[0], top, px[0], bottom], fill=_GRID)
        s = f"{v:g}"
        tw = _text_size(draw, s, font)[0]
        draw.text((px[0] - tw // 2, bottom + 4), s, fill=_FOREGROUND, font=font)
    draw.rectangle([left, top, right, bottom], outline=_FOREGROUND)
    for i, c in enumerate(curves):
        color = LINE_COLORS[i % len(LINE_COLORS)]
        ok = np.isfinite(c.y)
        px, py = to_px(c.x[ok], c.y[ok])
        if len(px) > 1:
            draw.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill=color, width=2)
        # legend entry, top-right inside the axes
        ly = top + 4 + i * (text_h + 4)
        lw = _text_size(draw, c.label, font)[0]
        draw.line(
            [right - lw - 30, ly + text_h // 2 + 1, right - lw - 10, ly + text_h // 2 + 1],
            fill=color,
            width=2,
        )
        draw.text((right - lw - 6, ly), c.label, fill=_FOREGROUND, font=font)
    _draw_axis_labels(fig, font, title, xlabel, ylabel, (left, top, right, bottom))
    return np.asarray(fig)


def _draw_axis_labels(
    fig: Image.Image, font: ImageFont.ImageFont, title: str, xlabel: str, ylabel: str, box: tuple[int, int, int, int]
) -> None:
    """Title centred above the axes ``box = (left, top, right, bottom)``, x label at the bottom, y label at the left."""
    draw = ImageDraw.Draw(fig)
    left, top, right, bottom = box
    text_h = _text_size(draw, "Ag", font)[1]
    tw = _text_size(draw, title, font)[0]
    draw.text(((left + right - tw) // 2, _MARGIN), title, fill=_FOREGROUND, font=font)
    tw = _text_size(draw, xlabel, font)[0]
    draw.text(((left + right - tw) // 2, fig.height - _MARGIN - text_h - 2), xlabel, fill=_FOREGROUND, font=font)
    _paste_vertical_label(fig, ylabel, font, _MARGIN, (top + bottom) // 2)


def _paste_vertical_label(fig: Image.Image, text: str, font: ImageFont.ImageFont, x: int, y_center: int) -> None:
    """Draw ``text`` rotated by 90 degrees (reading upwards) with its left edge at ``x``, centred on ``y_center``."""
    probe = ImageDraw.Draw(fig)
    lw, lh = _text_size(probe, text, font)
    label_img = Image.new("RGB", (lw + 4, lh + 6), _BACKGROUND)
    ImageDraw.Draw(label_img).text((2, 0), text, fill=_FOREGROUND, font=font)
    label_img = label_img.rotate(90, expand=True)
    fig.paste(label_img, (x, y_center - label_img.height // 2))


def bar_plot(
    categories: Sequence[str],
    series: dict[str, Sequence[float]],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (480, 320),
) -> np.ndarray:
    """Grouped bars: for each category, one bar per series (``series[name][i]`` belongs to ``categories[i]``).

    The y axis starts at 0 (or at the most negative value) and the value is printed above each bar when there is
    room. Returns a uint8 RGB image ``[H, W, 3]`` of ``size`` (width, height).
    """
    names = list(series)
    values = np.array([[float(v) for v in series[k]] for k in names], dtype=np.float64)  # [S, K]
    if values.ndim != 2 or values.shape[1] != len(categories) or not names:
        raise ValueError(f"every series needs one value per category ({len(categories)})")
    font = _font()
    width, height = size
    fig = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(fig)
    text_h = _text_size(draw, "Ag", font)[1]
    finite = values[np.isfinite(values)]
    y_lo = min(0.0, float(finite.min())) if finite.size else 0.0
    y_hi = max(0.0, float(finite.max())) if finite.size else 1.0
    if y_hi - y_lo < 1e-12:
        y_hi = y_lo + 1.0
    y_hi += 0.08 * (y_hi - y_lo)  # head room for the value labels
    yticks = _nice_ticks(y_lo, y_hi)
    ylabels = [f"{v:g}" for v in yticks]
    left = _MARGIN + text_h + _MARGIN + max(_text_size(draw, s, font)[0] for s in ylabels) + 6
    right = width - _MARGIN
    top = _MARGIN + text_h + _MARGIN + (len(names) * (text_h + 4) if len(names) > 1 else 0)
    bottom = height - (_MARGIN + 2 * text_h + 2 * _MARGIN)

    def to_py(y: float) -> float:
        return bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)

    for v, s in zip(yticks, ylabels, strict=True):
        py = to_py(float(v))
        draw.line([left, py, right, py], fill=_GRID)
        tw = _text_size(draw, s, font)[0]
        draw.text((left - 4 - tw, py - text_h // 2 - 1), s, fill=_FOREGROUND, font=font)
    group_w = (right - left) / len(categories)
    bar_w = group_w * 0.8 / len(names)
    for k, cat in enumerate(categories):
        gx = left + k * group_w + group_w * 0.1
        for i in range(len(names)):
            v = values[i, k]
            if not np.isfinite(v):
                continue
            x0, x1 = gx + i * bar_w, gx + (i + 1) * bar_w - 1
            y0, y1 = sorted((to_py(0.0), to_py(float(v))))
            draw.rectangle([x0, y0, x1, max(y1, y0 + 1)], fill=LINE_COLORS[i % len(LINE_COLORS)])
            label = f"{v:.2g}" if abs(v) < 0.01 else f"{v:.2f}"
            lw = _text_size(draw, label, font)[0]
            if lw <= bar_w + 6:
                draw.text((x0 + (bar_w - lw) / 2, y0 - text_h - 3), label, fill=_FOREGROUND, font=font)
        tw = _text_size(draw, cat, font)[0]
        draw.text((left + k * group_w + (group_w - tw) / 2, bottom + 4), cat, fill=_FOREGROUND, font=font)
    zero = to_py(0.0)
    draw.line([left, zero, right, zero], fill=_FOREGROUND)
    draw.rectangle([left, top, right, bottom], outline=_FOREGROUND)
    if len(names) > 1:  # legend above the axes
        for i, name in enumerate(names):
            ly = _MARGIN + text_h + _MARGIN + i * (text_h + 4) - 2
            draw.rectangle([left + 4, ly + 2, left + 14, ly + text_h], fill=LINE_COLORS[i % len(LINE_COLORS)])
            draw.text((left + 20, ly), name, fill=_FOREGROUND, font=font)
    _draw_axis_labels(fig, font, title, xlabel, ylabel, (left, top, right, bottom))
    return np.asarray(fig)


def image_row_figure(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    panel_size: int = 192,
    footer: str = "",
) -> np.ndarray:
    """RGB images ``[H, W, 3]`` (uint8) side by side, each scaled to ``panel_size`` wide, titles above.

    Images are enlarged with nearest-neighbour sampling (pixels stay visible) and shrunk with box averaging;
    the aspect ratio is kept. Returns a uint8 RGB image ``[H, W, 3]``.
    """
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = _text_size(probe, "Ag", font)[1]
    panels = []
    for img in images:
        h, w = img.shape[:2]
        ph = max(1, round(h * panel_size / w))
        resample = Image.NEAREST if w <= panel_size else Image.BOX
        panels.append(Image.fromarray(np.ascontiguousarray(img[..., :3])).resize((panel_size, ph), resample))
    top = _MARGIN + text_h + _MARGIN
    body_h = max(p.height for p in panels)
    footer_lines = footer.splitlines() if footer else []
    width = _MARGIN + len(panels) * (panel_size + _MARGIN)
    height = top + body_h + _MARGIN + len(footer_lines) * (text_h + 4)
    for line in footer_lines:
        width = max(width, 2 * _MARGIN + _text_size(probe, line, font)[0])
    fig = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(fig)
    for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        x0 = _MARGIN + i * (panel_size + _MARGIN)
        fig.paste(panel, (x0, top))
        tw = _text_size(draw, title, font)[0]
        draw.text((x0 + max(0, (panel_size - tw) // 2), _MARGIN), title, fill=_FOREGROUND, font=font)
    for j, line in enumerate(footer_lines):
        draw.text((_MARGIN, top + body_h + _MARGIN + j * (text_h + 4)), line, fill=_FOREGROUND, font=font)
    return np.asarray(fig)

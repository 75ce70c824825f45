"""The PIL plotting helpers used by the analysis figures: bar plots and image rows."""

from __future__ import annotations

import numpy as np
import pytest

from styleforge.analysis._plot import LINE_COLORS, bar_plot, image_row_figure


def test_bar_plot_draws_one_coloured_bar_per_value():
    img = bar_plot(["a", "b", "c"], {"one": [0.2, 0.5, -0.1], "two": [1.0, 0.0, 0.3]}, "title", "x", "y",
                   size=(400, 300))
    assert img.shape == (300, 400, 3) and img.dtype == np.uint8
    for color in LINE_COLORS[:2]:
        assert (img == color).all(-1).sum() > 50  # both series are drawn
    # the tallest bar (series "two", category "a") is taller than the others of its colour
    blue_cols = (img == LINE_COLORS[1]).all(-1).sum(0)
    first_group = blue_cols[: 400 // 3].max()
    assert first_group == blue_cols.max()
    with pytest.raises(ValueError, match="one value per category"):
        bar_plot(["a", "b"], {"one": [1.0]}, "t", "x", "y")


def test_image_row_figure_keeps_pixels_and_aspect():
    red = np.zeros((8, 16, 3), np.uint8)
    red[..., 0] = 255
    fig = image_row_figure([red, red], ["left", "right"], panel_size=64, footer="two lines\nof footer")
    assert fig.dtype == np.uint8 and fig.shape[1] >= 2 * 64
    assert (fig == [255, 0, 0]).all(-1).sum() == 2 * 64 * 32  # each panel enlarged to 64 x 32

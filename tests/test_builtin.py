"""The generator shipped inside the package (``builtin:emoji``) loads and generates emoji-like images."""

from __future__ import annotations

import torch
from click.testing import CliRunner

import styleforge
from styleforge.cli.main import cli
from styleforge.generation import generate_images


def test_builtin_emoji_loads_and_generates():
    nets = styleforge.load("builtin:emoji")
    G = nets.generator
    assert G is nets.G_ema and G.img_resolution == 32 and G.img_channels == 3 and G.c_dim == 0
    imgs = generate_images(G, [0, 1, 2, 3], truncation_psi=1.0)
    assert imgs.shape == (4, 3, 32, 32) and torch.isfinite(imgs).all()
    # Emoji sit on a white background: the corners are bright and the samples differ from one another.
    corners = imgs[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.mean() > 0.5
    assert (imgs[0] - imgs[1]).abs().mean() > 0.05


def test_generate_builtin_from_the_cli(tmp_path):
    out = CliRunner().invoke(
        cli, ["generate", "--network", "builtin:emoji", "--seeds", "0-3", "--outdir", str(tmp_path), "--device", "cpu"]
    )
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"seed{s:04d}.png" for s in range(4)]

"""Texture sticking: the high-frequency measure, a sticking and a moving pattern, tiny networks, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import styleforge
from styleforge.analysis.sticking import StickingOptions, high_frequency_energy, run_sticking, sliced_image
from styleforge.cli.main import cli
from styleforge.utils.errors import UserInputError
from styleforge.utils.seeding import z_from_seed

RES = 32
PATTERN_FREQ = 12  # cycles per image: above half the Nyquist frequency (16)


def _pattern(shift_x: torch.Tensor, freq: float = PATTERN_FREQ, res: int = RES) -> torch.Tensor:
    """Vertical stripes ``cos(2 pi f (x - shift))`` for each shift (image units): ``[N, 3, res, res]``."""
    x = (torch.arange(res, dtype=torch.float32) + 0.5) / res
    img = torch.cos(2 * math.pi * freq * (x[None, :] - shift_x[:, None]))  # [N, res]
    return img[:, None, None, :].expand(-1, 3, res, -1) * 0.8


class _StickySynthesis(nn.Module):
    def forward(self, ws, noise_mode="const"):
        return _pattern(torch.zeros(ws.shape[0]))


class _MovingSynthesis(nn.Module):
    def forward(self, ws, noise_mode="const", transform=None):
        shift = torch.zeros(ws.shape[0]) if transform is None else -transform.reshape(-1, 3, 3)[:, 0, 2]
        return _pattern(shift.expand(ws.shape[0]))


class _StickyGenerator(nn.Module):
    """Its image ignores the latent entirely: every detail sticks to the pixel grid."""

    z_dim, c_dim, w_dim, img_resolution, img_channels, num_ws = 4, 0, 4, RES, 3, 1

    def __init__(self) -> None:
        super().__init__()
        self.synthesis = _StickySynthesis()

    def mapping(self, z, c, truncation_psi=1.0):
        return z.unsqueeze(1)


class _MovingGenerator(_StickyGenerator):
    """Perfectly translation-equivariant: the stripes move with the input transform."""

    def __init__(self) -> None:
        super().__init__()
        self.synthesis = _MovingSynthesis()


def test_high_frequency_energy_separates_low_and_high_frequencies():
    high = _pattern(torch.zeros(1), freq=12)
    low = _pattern(torch.zeros(1), freq=3)
    e_high, e_low = high_frequency_energy(high, 0.5), high_frequency_energy(low, 0.5)
    # a sinusoid of amplitude 0.8 has about 0.32 * R^2 energy (window normalised to mean(w^2) = 1)
    assert float(e_high) == pytest.approx(0.32 * RES * RES, rel=0.1)
    assert float(e_low) < 1e-3 * float(e_high)


def test_sticking_pattern_stays_sharp_and_moving_pattern_blurs(tmp_path):
    options = StickingOptions(frames=16, radius=0.5, translate=0.05)
    sticky = run_sticking(_StickyGenerator(), tmp_path / "sticky", options)
    assert not sticky.translated
    assert sticky.sharpness == pytest.approx(1.0, abs=1e-6) and sticky.frame_change == pytest.approx(0.0, abs=1e-9)
    moving = run_sticking(_MovingGenerator(), tmp_path / "moving", options)
    assert moving.translated and moving.frame_change > 0.5
    assert moving.sharpness < 0.3  # +-1.6 px shifts of a 2.7 px period average the stripes away
    with pytest.raises(UserInputError, match="frames"):
        StickingOptions(frames=1)
    with pytest.raises(UserInputError, match="hf_cutoff"):
        StickingOptions(hf_cutoff=1.5)


@pytest.mark.parametrize("preset", ["stylegan2-tiny", "stylegan3-t-tiny", "stylegan3-r-tiny"])
def test_sticking_on_tiny_networks(preset, tmp_path):
    G = styleforge.create_model(preset).eval()
    options = StickingOptions(frames=8, seed=3)
    result = run_sticking(G, tmp_path, options)
    assert result.translated == preset.startswith("stylegan3")
    assert 0 < result.sharpness < 1.5 and result.frame_change > 0
    assert result.average.shape == (3, 16, 16) and result.sliced.shape == (3, 8, 16)
    for name in ("sticking.png", "sticking_frames.png", "sticking_slice.png", "sticking.json"):
        assert (tmp_path / name).is_file()
    # the first row of the sliced image is the middle row of the seed's own image
    with torch.no_grad():
        z = z_from_seed(3, G.z_dim)
        img = G.synthesis(G.mapping(z, torch.zeros(1, 0)), noise_mode="const")
    torch.testing.assert_close(torch.from_numpy(result.sliced[:, 0]), img[0, :, 8], atol=1e-5, rtol=0)
    with pytest.raises(UserInputError, match="slice_row"):
        sliced_image(G, StickingOptions(frames=2, slice_row=16))


def test_sticking_cli_on_builtin_emoji(tmp_path):
    out = tmp_path / "stick"
    result = CliRunner().invoke(cli, ["sticking", "--network", "builtin:emoji", "--seed", "1", "--frames", "8",
                                      "--radius", "0.05", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "latent perturbations only" in result.output
    summary = json.loads((out / "sticking.json").read_text())
    assert f"sharpness {summary['sharpness']:.4f}" in result.output
    assert summary["options"]["frames"] == 8 and not summary["translated"]
    result = CliRunner().invoke(cli, ["sticking", "--network", "builtin:emoji", "--frames", "4", "--fourier-input",
                                      "--out", str(tmp_path / "f"), "--device", "cpu"])
    assert result.exit_code == 0 and "and translations" in result.output, result.output

"""Per-resolution tRGB contributions: exact split of the image, shares, a silenced level, errors, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import styleforge
from styleforge.analysis.contributions import ContributionOptions, compute_contributions, level_images
from styleforge.cli.main import cli
from styleforge.utils.errors import UserInputError
from tests.conftest import reference_file


@pytest.fixture(scope="module")
def tiny_skip():
    torch.manual_seed(0)
    return styleforge.create_model("stylegan2-tiny").eval()


def test_levels_add_up_to_the_image(tiny_skip):
    emoji = styleforge.load("builtin:emoji").G_ema.eval()
    for G in (tiny_skip, emoji):
        with torch.no_grad():
            ws = G.mapping(torch.randn(3, G.z_dim), None)
            img, terms = level_images(G, ws)
            torch.testing.assert_close(img, G.synthesis(ws, noise_mode="const"))
        assert len(terms) == len(G.synthesis.block_resolutions)
        assert all(t.shape == img.shape for t in terms)
        torch.testing.assert_close(sum(terms), img, atol=1e-5, rtol=0)


def test_shares_and_a_silenced_level(tiny_skip):
    options = ContributionOptions(num_samples=24, batch_size=8, seed=1)
    result = compute_contributions(tiny_skip, options)
    assert result.resolutions == [4, 8, 16] and result.num_samples == 24
    for name in ("std_share", "variance_share", "energy_share"):
        assert sum(result.shares[name]) == pytest.approx(1.0, abs=1e-9)
    # exact up to the float32 rounding of the terms against the image
    assert sum(result.shares["covariance_share"]) == pytest.approx(1.0, abs=1e-5)
    assert all(s > 0.01 for s in result.shares["std_share"])
    # Silence the 8 px tRGB: its share drops to zero, the others share everything.
    with torch.no_grad():
        tiny_skip.synthesis.b8.torgb.weight.zero_()
        tiny_skip.synthesis.b8.torgb.bias.zero_()
    try:
        silenced = compute_contributions(tiny_skip, options)
    finally:
        torch.manual_seed(0)
        tiny_skip.load_state_dict(styleforge.create_model("stylegan2-tiny").state_dict())
    assert silenced.shares["std_share"][1] == pytest.approx(0.0, abs=1e-9)
    assert silenced.shares["covariance_share"][1] == pytest.approx(0.0, abs=1e-9)
    assert silenced.shares["std_share"][0] > result.shares["std_share"][0]


@pytest.mark.parametrize("preset,overrides", [("stylegan3-t-tiny", {}), ("stylegan2-tiny", {"architecture": "resnet"})])
def test_non_skip_generators_are_refused(preset, overrides):
    G = styleforge.create_model(preset, **overrides)
    with pytest.raises(UserInputError, match="skip"):
        compute_contributions(G, ContributionOptions(num_samples=2))


def test_contributions_cli_on_builtin_emoji(tmp_path):
    out = tmp_path / "contrib"
    result = CliRunner().invoke(cli, ["contributions", "--network", "builtin:emoji", "--num", "32", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "contributions.json").read_text())
    assert summary["resolutions"] == [4, 8, 16, 32] and summary["num_samples"] == 32
    # the trained emoji network draws most of its image at the output resolution
    assert max(summary["std_share"]) == summary["std_share"][-1] > 0.5
    assert "32px" in result.output
    for name in ("contributions.png", "contributions_sample.png"):
        assert (out / name).is_file()
    result = CliRunner().invoke(cli, ["contributions", "--network", str(tmp_path / "none"), "--out", str(out)])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_reference_stylegan2_skip_levels_add_up():
    G = styleforge.load(reference_file("sg2_skip_stripped.pkl")).G_ema.eval()
    with torch.no_grad():
        img, terms = level_images(G, G.mapping(torch.randn(2, G.z_dim), None))
    assert len(terms) == 4
    torch.testing.assert_close(sum(terms), img, atol=1e-4, rtol=0)

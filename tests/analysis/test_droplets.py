"""Droplet detector: the peak ratio, healthy tiny networks, an injected spike, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import styleforge
from styleforge.analysis.droplets import DropletOptions, detect_droplets, peak_ratios, synthesis_layers
from styleforge.cli.main import cli
from styleforge.utils.errors import UserInputError

SPIKE_AT = (5, 9)


def test_peak_ratio_of_flat_and_spiky_maps():
    flat = torch.ones(2, 4, 8, 8)
    ratios, maps = peak_ratios(flat)
    torch.testing.assert_close(ratios, torch.ones(2), atol=1e-6, rtol=0)
    assert maps.shape == (2, 8, 8)
    spiky = flat.clone()
    spiky[1, :, 3, 4] = 50.0  # every channel spikes at one pixel
    ratios, maps = peak_ratios(spiky)
    assert float(ratios[1]) == pytest.approx(50.0, rel=1e-5) and float(ratios[0]) == pytest.approx(1.0)
    sparse = flat.clone()
    sparse[0, 0, 3, 4] = 50.0  # one channel of four: the RMS over channels rises only to 25
    assert float(peak_ratios(sparse)[0][0]) == pytest.approx((50.0**2 / 4 + 3 / 4) ** 0.5, rel=1e-5)


@pytest.mark.parametrize("preset", ["stylegan2-tiny", "stylegan3-t-tiny", "stylegan3-r-tiny"])
def test_demodulated_tiny_networks_have_no_droplets(preset):
    G = styleforge.create_model(preset).eval()
    result = detect_droplets(G, DropletOptions(num_samples=8))
    assert not result.has_droplets
    names = [layer.name for layer in result.layers]
    if preset == "stylegan2-tiny":
        assert names == ["b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1"]  # b4 is below min_size
    else:
        assert names[0].startswith("L0_") and len(names) == G.synthesis.num_layers  # ToRGB excluded
    assert all(1 <= layer.median_ratio <= layer.max_ratio < 10 for layer in result.layers)


def test_injected_spike_is_found_in_its_layer():
    G = styleforge.create_model("stylegan2-tiny").eval()
    layer = dict(synthesis_layers(G))["b16.conv0"]

    def spike(module, args, out):
        out = out.clone()
        out[:, :, SPIKE_AT[0], SPIKE_AT[1]] += 100 * out.abs().mean()
        return out

    handle = layer.register_forward_hook(spike)
    try:
        result = detect_droplets(G, DropletOptions(num_samples=6, batch_size=3))
    finally:
        handle.remove()
    by_name = {layer.name: layer for layer in result.layers}
    assert result.has_droplets
    assert by_name["b16.conv0"].share_above == 1.0
    assert by_name["b8.conv0"].share_above == 0.0 and by_name["b8.conv1"].share_above == 0.0
    assert result.worst["layer"] in ("b16.conv0", "b16.conv1") and result.worst["ratio"] > 10
    if result.worst["layer"] == "b16.conv0":
        assert tuple(result.worst["peak"]) == SPIKE_AT


def test_droplets_errors_and_cli(tmp_path):
    with pytest.raises(UserInputError, match="threshold"):
        DropletOptions(threshold=0.5)
    with pytest.raises(UserInputError, match="min_size"):
        detect_droplets(styleforge.create_model("stylegan2-tiny"), DropletOptions(num_samples=1, min_size=64))
    out = tmp_path / "drops"
    result = CliRunner().invoke(cli, ["droplets", "--network", "builtin:emoji", "--num", "8", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "no droplets" in result.output and "b32.conv1" in result.output
    summary = json.loads((out / "droplets.json").read_text())
    assert summary["has_droplets"] is False and len(summary["layers"]) == 6
    assert (out / "droplets.png").is_file() and (out / "droplets_worst.png").is_file()

"""rosinality/stylegan2-pytorch checkpoints: the reference file written by that project's code reproduces its
outputs; our networks survive a round trip through its format in both directions; only tensors and
``argparse.Namespace`` are unpickled."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import styleforge
from styleforge.cli.main import cli
from styleforge.convert.rosinality import read_checkpoint, save_rosinality
from styleforge.models.stylegan2 import (
    StyleGAN2Discriminator,
    StyleGAN2DiscriminatorConfig,
    StyleGAN2Generator,
    StyleGAN2GeneratorConfig,
)
from styleforge.utils.errors import UserInputError
from tests.conftest import reference_file

ATOL = 1e-4


class _NotAllowed:
    """A class torch's weights-only loader does not know: reading a file holding one must fail."""


def _err(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.detach().numpy().astype(np.float64) - b.astype(np.float64)).max())


@pytest.mark.reference
@torch.no_grad()
def test_reference_checkpoint_reproduces_its_outputs(tmp_path):
    ref = np.load(reference_file("ros_sg2_8.npz"))
    loaded = styleforge.load(reference_file("ros_sg2_8.pt"))
    assert loaded.source == "rosinality" and loaded.config["args"]["channel_multiplier"] == 1
    G = loaded.G_ema
    z, w = torch.from_numpy(ref["z"]).float(), torch.from_numpy(ref["w"]).float()
    errors = {
        "w": _err(G.mapping(z, None)[:, 0], ref["w"]),
        "img_z": _err(G(z, None, noise_mode="const"), ref["img_z"]),
        "img_w": _err(G.synthesis(w[:, None].repeat(1, G.num_ws, 1), noise_mode="const"), ref["img_w"]),
    }
    print(f"[ros_sg2_8] max abs errors: {errors}")
    assert max(errors.values()) <= ATOL, errors


@pytest.mark.reference
def test_reference_round_trip_through_both_formats(tmp_path):
    ref_pt = reference_file("ros_sg2_8.pt")
    ours, back = tmp_path / "ours", tmp_path / "back.pt"
    runner = CliRunner()
    result = runner.invoke(cli, ["convert", str(ref_pt), str(ours), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["convert", str(ours), str(back), "--to", "rosinality", "--no-progress"])
    assert result.exit_code == 0, result.output
    original, written = read_checkpoint(ref_pt), read_checkpoint(back)
    # same names and shapes: rosinality's Generator(size=8, style_dim=32, n_mlp=2) loads it strictly
    assert {k: tuple(v.shape) for k, v in written["g_ema"].items()} == {
        k: tuple(v.shape) for k, v in original["g_ema"].items()
    }
    for key, value in original["g_ema"].items():
        assert torch.allclose(written["g_ema"][key], value, atol=1e-7), key
    assert isinstance(written["args"], argparse.Namespace)
    assert (written["args"].size, written["args"].latent, written["args"].n_mlp) == (8, 32, 2)
    ref = np.load(reference_file("ros_sg2_8.npz"))
    with torch.no_grad():
        img = styleforge.load(back).G_ema(torch.from_numpy(ref["z"]).float(), None, noise_mode="const")
    assert _err(img, ref["img_z"]) <= ATOL


def _perturbed(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=gen))
    return net.eval()


@torch.no_grad()
def test_our_networks_round_trip(tmp_path):
    g_cfg = StyleGAN2GeneratorConfig(z_dim=16, w_dim=16, img_resolution=8, mapping_layers=2, channel_base=16384,
                                     channel_max=512, conv_clamp=None, num_fp16_res=0)
    d_cfg = StyleGAN2DiscriminatorConfig(img_resolution=8, channel_base=16384, channel_max=512, conv_clamp=None,
                                         num_fp16_res=0)
    G, G_ema = _perturbed(StyleGAN2Generator(g_cfg), 1), _perturbed(StyleGAN2Generator(g_cfg), 2)
    D = _perturbed(StyleGAN2Discriminator(d_cfg), 3)
    path = save_rosinality(tmp_path / "ckpt.pt", G=G, D=D, G_ema=G_ema)
    raw = read_checkpoint(path)
    assert set(raw) == {"g", "d", "g_ema", "latent_avg", "args"} and "convs.1.conv2.1.weight" in raw["d"]
    loaded = styleforge.load(path)
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    for ours, back in ((G, loaded.G), (G_ema, loaded.G_ema)):
        assert torch.allclose(ours(z, None, noise_mode="const"), back(z, None, noise_mode="const"), atol=1e-6)
    assert torch.equal(G_ema.mapping.w_avg, loaded.G_ema.mapping.w_avg)  # kept under latent_avg
    img = G_ema(z, None, noise_mode="const")
    assert torch.allclose(D(img, None), loaded.D(img, None), atol=1e-5)


def test_incompatible_network_is_refused(tmp_path):
    G = StyleGAN2Generator(StyleGAN2GeneratorConfig(z_dim=8, w_dim=8, img_resolution=8, mapping_layers=1,
                                                    channel_base=64, channel_max=16))
    with pytest.raises(UserInputError, match="rosinality"):
        save_rosinality(tmp_path / "x.pt", G_ema=G)


def test_only_tensors_and_namespace_are_unpickled(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"g_ema": {}, "args": _NotAllowed()}, path)
    with pytest.raises(UserInputError, match="weights-only"):
        styleforge.load(path)
    other = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, other)
    with pytest.raises(UserInputError, match="neither a styleforge training_state.pt nor a rosinality"):
        styleforge.load(other)

"""``styleforge generate`` and :func:`styleforge.generation.generate_images`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import styleforge
from styleforge.cli.main import cli
from styleforge.generation import generate_images
from styleforge.loading import save
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import to_uint8
from styleforge.utils.seeding import z_from_seed
from tests.convert.test_official_stylegan2 import C_DIM, RES, make_networks


@pytest.fixture(scope="module")
def conditional_net(tmp_path_factory):
    G, _ = make_networks()
    return G, save(tmp_path_factory.mktemp("cond") / "net", G_ema=G)


@pytest.fixture(scope="module")
def unconditional_net(tmp_path_factory):
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan2-tiny").eval()
    with torch.no_grad():
        for p in G.parameters():  # move biases and noise strengths off zero so that images are not flat
            p.add_(0.05 * torch.randn_like(p))
    return G, save(tmp_path_factory.mktemp("uncond") / "net", G=G)


def _run(*args: str):
    return CliRunner().invoke(cli, ["generate", *args], catch_exceptions=False)


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_one_png_per_seed_with_the_official_seed_convention(tmp_path, unconditional_net):
    G, net = unconditional_net
    out = tmp_path / "a"
    result = _run("--network", str(net), "--seeds", "0-2,7", "--trunc", "0.7", "--outdir", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "seed0000.png",
        "seed0001.png",
        "seed0002.png",
        "seed0007.png",
    ]
    res = G.img_resolution
    img7 = _png(out / "seed0007.png")
    assert img7.shape == (res, res, 3) and img7.dtype == np.uint8
    assert img7.std() > 5  # a picture, not a constant
    # seed 7 is z = RandomState(7).randn(1, z_dim), rounded as the official scripts do
    with torch.no_grad():
        expected = to_uint8(G(z_from_seed(7, G.z_dim), None, truncation_psi=0.7, noise_mode="const"))[0]
    assert np.abs(img7.astype(int) - expected.astype(int)).max() <= 1
    # the same seed gives the same image in another run, in another batch position
    out2 = tmp_path / "b"
    assert (
        _run("--network", str(net), "--seeds", "7,3", "--trunc", "0.7", "--outdir", str(out2)).exit_code == 0
    )
    assert np.array_equal(_png(out2 / "seed0007.png"), img7)
    assert not np.array_equal(_png(out / "seed0000.png"), img7)


def test_grid_and_conditional_class(tmp_path, conditional_net):
    G, net = conditional_net
    out = tmp_path / "g"
    result = _run("--network", str(net), "--seeds", "0-3", "--class", "2", "--grid", "--outdir", str(out))
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.iterdir()] == ["grid.png"]
    grid = _png(out / "grid.png")
    assert grid.shape == (2 * RES, 2 * RES, 3)
    single = tmp_path / "s"
    assert _run("--network", str(net), "--seeds", "3", "--class", "2", "--outdir", str(single)).exit_code == 0
    assert np.abs(_png(single / "seed0003.png").astype(int) - grid[RES:, RES:].astype(int)).max() <= 1


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], f"conditional with {C_DIM} classes; choose one with --class"),
        (
            ["--class", str(C_DIM)],
            f"Class {C_DIM} is out of range; this network has classes 0 to {C_DIM - 1}",
        ),
        (["--class", "0", "--translate", "0.1,0"], "--translate/--rotate work with StyleGAN3"),
        (["--class", "0", "--translate", "0.1"], "--translate expects two numbers"),
        (["--class", "0", "--trunc-cutoff", "99"], "truncation cutoff 99 is outside"),
    ],
)
def test_mistakes_give_one_clean_error_line(tmp_path, conditional_net, extra, message):
    _, net = conditional_net
    result = CliRunner().invoke(
        cli, ["generate", "--network", str(net), "--seeds", "0", "--outdir", str(tmp_path), *extra]
    )
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output and result.output.startswith("Error: ")
    assert not list(tmp_path.glob("*.png"))


def test_class_for_an_unconditional_network_and_bad_inputs(tmp_path, unconditional_net):
    _, net = unconditional_net
    runner = CliRunner()
    for args, message in [
        (["--network", str(net), "--seeds", "0", "--class", "1"], "unconditional (c_dim=0)"),
        (["--network", str(net), "--seeds", "0-x"], "Bad seed specification"),
        (["--network", str(tmp_path / "missing"), "--seeds", "0"], "does not exist"),
    ]:
        result = runner.invoke(cli, ["generate", *args, "--outdir", str(tmp_path)])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_generate_images_batching_and_noise_modes(unconditional_net):
    G, _ = unconditional_net
    a = generate_images(G, [4, 5, 6], batch_size=1)
    b = generate_images(G, [4, 5, 6], batch_size=3)
    assert a.shape == (3, 3, G.img_resolution, G.img_resolution)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.equal(generate_images(G, [4], noise_mode="none"), a[:1])
    with pytest.raises(UserInputError, match="Unknown noise mode"):
        generate_images(G, [0], noise_mode="fixed")
    with pytest.raises(UserInputError, match="No seeds"):
        generate_images(G, [])


def test_stylegan3_translate_moves_the_content(tmp_path):
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan3-t-tiny").eval()
    net = save(tmp_path / "sg3", G_ema=G)
    plain, moved = tmp_path / "plain", tmp_path / "moved"
    assert _run("--network", str(net), "--seeds", "1", "--outdir", str(plain)).exit_code == 0
    result = _run(
        "--network",
        str(net),
        "--seeds",
        "1",
        "--translate",
        "0.25,0",
        "--rotate",
        "10",
        "--outdir",
        str(moved),
    )
    assert result.exit_code == 0, result.output
    a, b = _png(plain / "seed0001.png"), _png(moved / "seed0001.png")
    assert a.shape == b.shape and not np.array_equal(a, b)
    # the CLI passes exactly the network-side matrix of styleforge.transform_matrix
    M = styleforge.transform_matrix(translate=(0.25, 0.0), rotate=10.0)
    expected = to_uint8(generate_images(G, [1], transform=M))[0]
    assert np.array_equal(b, expected)
